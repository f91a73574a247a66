//! kpi-service: records sales activity and computes per-rep and per-team KPIs.

/// API keys at run time: authentication, roles, team scopes.
pub mod access;
/// Builds the server from config, serves until a signal, drains with a deadline.
pub mod app;
/// What the command-line clients share: target, key, TLS channel.
pub mod client;
/// Every setting, typed, from flags and environment.
pub mod config;
/// The demo and load generator (`kpi-service demo`).
pub mod demo;
/// Pure types and rules: ids, validation, paging. No I/O, no protobuf, no SQL.
pub mod domain;
/// The local PostgreSQL cluster used when no `DATABASE_URL` is given.
pub mod embedded_pg;
/// The one error type at the service boundary.
pub mod error;
/// Transport: gRPC services, proto <-> domain conversion, error mapping.
pub mod grpc;
/// gRPC health driven by the real database state.
pub mod health;
/// Backfill from CRM exports (`kpi-service import`).
pub mod import;
/// Returning freed memory to the system after heavy calls.
pub mod memory;
/// Prometheus metrics: names, recording, the exposition.
pub mod scrape;
/// The use cases shared by every transport: caller + typed query in,
/// domain values out; authorization, planning and ranking live here once.
pub mod service;
/// All SQL, grouped by aggregate; returns domain types.
pub mod store;
/// Logging setup and the per-RPC tracing layer.
pub mod telemetry;
/// Builders and throwaway infrastructure for tests, benches and the demo.
pub mod testkit;

pub use error::Error;
