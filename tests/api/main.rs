//! One integration-test binary: every test talks to a real PostgreSQL and a
//! real gRPC server over TCP. See `helpers` for how both are provided.

mod access;
mod activity;
mod browser;
mod cache;
mod connect;
mod currencies;
mod dashboard;
mod deletions;
mod directory;
mod durability;
mod embedded;
mod exactness;
mod explain;
mod grpcurl;
mod helpers;
mod hostile;
mod import;
mod kpi;
mod metrics;
mod protos;
mod read_replicas;
mod relative;
mod replicas;
mod server;
mod streams;
mod targets;
mod traces;
mod watch;
