//! kpi-service: records sales activity and computes per-rep and per-team KPIs.
//!
//! The arrows point one way: the transports (`grpc`, `http`) call `service`,
//! which calls `store`; everything may use `domain`, and `config`, `proto`
//! and `error` are leaves anything may use; `app` wires them together.

/// Builds the server from settings, serves until a signal, drains with a deadline.
pub mod app;
/// What the command-line clients share: target, key, TLS channel.
pub mod client;
/// The command line: `serve` (the app) and the one-shot subcommands (keys, migrate, demo, import).
pub mod commands;
/// Every setting and command line, typed, from flags and environment (a leaf).
pub mod config;
/// Opening the database: embedded ownership, guest wait, read replicas.
pub mod database;
/// The demo and load generator (`kpi-service demo`), and its record builders.
pub mod demo;
/// Pure types and rules: ids, validation, paging, KPI math. No I/O, no protobuf, no SQL.
pub mod domain;
/// The local PostgreSQL cluster used when no `DATABASE_URL` is given.
pub mod embedded_pg;
/// The one error type at the service boundary (a leaf).
pub mod error;
/// Transport: gRPC services, proto <-> domain conversion, error mapping.
pub mod grpc;
/// gRPC health driven by the real database state.
pub mod health;
/// HTTP in front of gRPC: the page, the metrics scrape, Connect.
pub mod http;
/// Backfill from CRM exports (`kpi-service import`).
pub mod import;
/// Returning freed memory to the system after heavy calls.
pub mod memory;
/// Metrics, logs and traces: Prometheus recording and exposition, the subscriber, OTLP.
pub mod observe;
/// The wire contract: generated `kpi.v1` code, descriptors, methods, codec, limits (a leaf).
pub mod proto;
/// The use cases shared by every transport: caller + typed query in,
/// domain values out; authorization, planning and ranking live here once.
pub mod service;
/// All SQL, grouped by aggregate; returns domain types.
pub mod store;
/// Builders and throwaway infrastructure for the tests and benches (the
/// `testkit` feature; never in the released binary).
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use error::Error;
