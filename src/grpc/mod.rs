//! Transport only: the gRPC server's services (`server`), one handler file
//! per `kpi.v1` service, conversion between protobuf and the domain
//! (`convert/`, where requests are validated), the key check and the
//! method policy (`auth`, `policy`), the call deadline, the policy of open
//! streams, and the one mapping from the crate's error to `tonic::Status`.

pub mod activity;
pub mod auth;
pub mod convert;
pub mod deadline;
pub mod directory;
pub mod kpi;
pub mod policy;
pub mod rates;
pub mod server;
pub mod status;
pub mod streams;
pub mod targets;

use crate::proto::pb;
