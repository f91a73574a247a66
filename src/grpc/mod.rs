//! Transport only: the gRPC services, conversion between protobuf and the
//! domain (`TryFrom` is where requests are validated), and the one mapping
//! from the crate's error to `tonic::Status`.

pub mod activity;
pub mod auth;
pub mod codec;
pub mod connect;
pub mod convert;
pub mod deadline;
pub mod directory;
pub mod kpi;
pub mod page;
pub mod rates;
pub mod status;
pub mod targets;

/// Generated protobuf and gRPC code for `kpi.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("kpi.v1");
    include!(concat!(env!("OUT_DIR"), "/kpi.v1.serde.rs"));
}

/// Encoded descriptors of every `kpi.v1` file, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kpi_descriptor.bin"));

/// One method of the `kpi.v1` API, from its descriptor set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `/package.Service/Method`, the gRPC path.
    pub path: String,
    /// Neither side streams.
    pub unary: bool,
}

/// Every method of the `kpi.v1` API (the access policy and the call
/// deadline are checked against this list).
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

/// The fully qualified names of the `kpi.v1` services this server offers
/// (health reports each of them).
pub fn service_names() -> Vec<&'static str> {
    use tonic::server::NamedService;
    vec![
        <pb::directory_service_server::DirectoryServiceServer<directory::DirectoryApi> as NamedService>::NAME,
        <pb::activity_service_server::ActivityServiceServer<activity::ActivityApi> as NamedService>::NAME,
        <pb::kpi_service_server::KpiServiceServer<kpi::KpiApi> as NamedService>::NAME,
        <pb::target_service_server::TargetServiceServer<targets::TargetApi> as NamedService>::NAME,
        <pb::exchange_rate_service_server::ExchangeRateServiceServer<rates::RatesApi> as NamedService>::NAME,
    ]
}

#[cfg(test)]
mod tests {
    use crate::domain::access::POLICY;

    #[test]
    fn every_method_of_the_api_has_a_policy_entry_and_every_entry_a_method() {
        let mut methods: Vec<String> = super::methods().into_iter().map(|m| m.path).collect();
        methods.sort();
        let mut policy: Vec<String> = POLICY.iter().map(|r| r.path.to_owned()).collect();
        policy.sort();
        assert!(methods.len() >= 15, "{methods:?}");
        assert_eq!(methods, policy);
    }
}
