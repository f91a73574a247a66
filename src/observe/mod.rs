//! What the service tells its operators: Prometheus metrics (`metrics`:
//! names, recording, the exposition `GET /metrics` answers) and logs and
//! traces (`telemetry`: the subscriber, OTLP export, the per-call span and
//! measurements of every RPC).

pub mod metrics;
pub mod telemetry;
