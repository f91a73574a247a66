//! The wire contract of `kpi.v1`, shared by the server and its clients
//! (`grpc/`, `http/`, `demo/`, `import/`, `testkit/`): the generated code
//! (quarantined), the descriptor set served by reflection, the table of
//! methods, the codec, the message limit and the timestamp conversions.

pub mod codec;

use chrono::{DateTime, Utc};
use pbjson_types::Timestamp;

use crate::domain::period;

/// Generated protobuf and gRPC code for `kpi.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("kpi.v1");
    include!(concat!(env!("OUT_DIR"), "/kpi.v1.serde.rs"));
}

/// Encoded descriptors of every `kpi.v1` file, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kpi_descriptor.bin"));

/// Largest request message the service decodes (a batch of 1000 records
/// with long comments fits easily); larger ones get RESOURCE_EXHAUSTED.
/// The clients (`import`, `demo`) encode no larger ones.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// One method of the `kpi.v1` API, from its descriptor set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `/package.Service/Method`, the gRPC path.
    pub path: String,
    /// Neither side streams.
    pub unary: bool,
}

/// Every method of the `kpi.v1` API (the access policy, the call deadline
/// and the metrics' method labels are checked against this list).
pub fn methods() -> Vec<Method> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                methods.push(Method {
                    path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    unary: !method.client_streaming() && !method.server_streaming(),
                });
            }
        }
    }
    methods
}

/// An instant as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf timestamp as an instant; out-of-range values are errors, not
/// panics.
pub fn instant(ts: &Timestamp) -> Result<DateTime<Utc>, String> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| format!("nanos must be within 0..1e9 (got {})", ts.nanos))?;
    DateTime::from_timestamp(ts.seconds, nanos)
        .filter(|at| period::year_accepted(chrono::Datelike::year(at)))
        .ok_or_else(|| {
            format!(
                "must be between {}-01-01T00:00:00Z and {}-12-31T23:59:59Z (got {} seconds)",
                period::FIRST_YEAR,
                period::LAST_YEAR,
                ts.seconds
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_out_of_range_are_errors() {
        assert!(
            instant(&Timestamp {
                seconds: i64::MAX,
                nanos: 0
            })
            .is_err()
        );
        assert!(
            instant(&Timestamp {
                seconds: 0,
                nanos: 1_000_000_000
            })
            .is_err()
        );
        let at = instant(&Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        });
        assert_eq!(
            at.map(timestamp),
            Ok(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5
            })
        );
    }
}
