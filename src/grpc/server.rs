//! The gRPC server's services: health, reflection (v1 and v1alpha, limited
//! to our descriptors and health's) and the five `kpi.v1` services over the
//! use cases, each with its message limit.

use chrono_tz::Tz;
use tonic::{server::NamedService, service::Routes};
use tonic_health::pb::health_server::{Health, HealthServer};

use super::{
    activity::ActivityApi, directory::DirectoryApi, kpi::KpiApi, rates::RatesApi,
    streams::StreamLimits, targets::TargetApi,
};
use crate::{
    proto::{
        FILE_DESCRIPTOR_SET, MAX_MESSAGE_BYTES,
        pb::{
            activity_service_server::ActivityServiceServer,
            directory_service_server::DirectoryServiceServer,
            exchange_rate_service_server::ExchangeRateServiceServer,
            kpi_service_server::KpiServiceServer, target_service_server::TargetServiceServer,
        },
    },
    service::Services,
};

/// The fully qualified names of the `kpi.v1` services this server offers
/// (health reports each of them).
pub fn service_names() -> Vec<&'static str> {
    vec![
        <DirectoryServiceServer<DirectoryApi> as NamedService>::NAME,
        <ActivityServiceServer<ActivityApi> as NamedService>::NAME,
        <KpiServiceServer<KpiApi> as NamedService>::NAME,
        <TargetServiceServer<TargetApi> as NamedService>::NAME,
        <ExchangeRateServiceServer<RatesApi> as NamedService>::NAME,
    ]
}

/// Every service the server answers, over `services`; `limits` end open
/// streams, `default_zone` is the zone of periods that name none.
pub fn routes(
    services: Services,
    limits: StreamLimits,
    default_zone: Tz,
    health: HealthServer<impl Health>,
) -> anyhow::Result<Routes> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok(Routes::new(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(DirectoryServiceServer::new(DirectoryApi::new(
            services.clone(),
        )))
        .add_service(
            ActivityServiceServer::new(ActivityApi::new(services.clone(), limits.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(KpiServiceServer::new(KpiApi::new(
            services.clone(),
            default_zone,
            limits,
        )))
        .add_service(ExchangeRateServiceServer::new(RatesApi::new(
            services.clone(),
        )))
        .add_service(TargetServiceServer::new(TargetApi::new(
            services,
            default_zone,
        ))))
}
