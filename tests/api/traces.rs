//! OpenTelemetry traces, opt-in with the standard `OTEL_EXPORTER_OTLP_*`
//! variables: the service (its binary, in its own process) exports over
//! OTLP/gRPC to a real receiver built here from the published OTLP protos
//! (`opentelemetry-proto`): one span per call continuing the caller's W3C
//! `traceparent`, child spans for each KPI query and for the batch
//! transaction, and no secret or email in any attribute.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use kpi_service::{
    proto::pb::{
        self, activity_service_client::ActivityServiceClient,
        directory_service_client::DirectoryServiceClient, kpi_service_client::KpiServiceClient,
    },
    testkit::{
        process::{Launch, ServiceProcess},
        records,
    },
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use tonic::{Request, Response, Status, transport::Channel};

use crate::helpers::{BIN, EmptyDatabase, watched_dir};

/// An OTLP trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        if let Ok(mut kept) = self.spans.lock() {
            kept.extend(spans);
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request carrying `traceparent`.
fn traced<T>(message: T, key: &str, traceparent: &str) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {key}").parse().unwrap());
    metadata.insert("traceparent", traceparent.parse().unwrap());
    request
}

#[tokio::test]
async fn calls_are_traced_from_the_callers_traceparent_down_to_each_query() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let database = EmptyDatabase::create().await;
    let dir = watched_dir("traces");
    let service = ServiceProcess::start(&Launch {
        database_url: Some(&database.url),
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Launch::new(BIN, &dir)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let key = service.admin_key().unwrap();
    let channel = Channel::from_shared(service.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{parent}-01");
    let mut directory = DirectoryServiceClient::new(channel.clone());
    directory
        .upsert_team(traced(
            pb::UpsertTeamRequest {
                team_id: "t".into(),
                display_name: "T".into(),
                parent_team_id: String::new(),
            },
            &key,
            &traceparent,
        ))
        .await
        .unwrap();
    directory
        .upsert_rep(traced(
            pb::UpsertRepRequest {
                rep_id: "r".into(),
                display_name: "R".into(),
                email: "someone@example.com".into(),
                team_id: "t".into(),
                ..Default::default()
            },
            &key,
            &traceparent,
        ))
        .await
        .unwrap();
    let at = chrono::Utc::now() - chrono::Duration::minutes(5);
    ActivityServiceClient::new(channel.clone())
        .record_activities(traced(
            pb::RecordActivitiesRequest {
                records: vec![records::interaction("i", "r", pb::Channel::Call, at).record()],
            },
            &key,
            &traceparent,
        ))
        .await
        .unwrap();
    KpiServiceClient::new(channel.clone())
        .get_scorecard(traced(
            pb::GetScorecardRequest {
                subject: Some(pb::Subject {
                    subject: Some(pb::subject::Subject::TeamId("t".into())),
                }),
                period: Some(pb::Period {
                    relative: pb::RelativePeriod::LastNDays as i32,
                    last_n_days: 3,
                    ..Default::default()
                }),
                kpis: Vec::new(),
            },
            &key,
            &traceparent,
        ))
        .await
        .unwrap();

    // The spans of our trace arrive (batched every 100 ms here).
    let wanted = |spans: &[Span]| {
        let named = |name: &str| {
            spans
                .iter()
                .any(|s| s.name == name && hex(&s.trace_id) == trace)
        };
        named("kpi.v1.KpiService/GetScorecard")
            && named("kpi.v1.ActivityService/RecordActivities")
            && named("kpi_query")
            && named("batch_transaction")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = receiver.spans.lock().map(|s| s.clone()).unwrap_or_default();
        if wanted(&spans) {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans received: {:?}",
            spans
                .iter()
                .map(|s| (&s.name, hex(&s.trace_id)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ours: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace).collect();
    let by_name = |name: &str| {
        ours.iter()
            .copied()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span"))
    };
    // The call's span continues the caller's: its parent is the caller's
    // span; the query and the transaction are its children.
    let call = by_name("kpi.v1.KpiService/GetScorecard");
    assert_eq!(hex(&call.parent_span_id), parent);
    assert_eq!(call.kind, 2, "SPAN_KIND_SERVER");
    let query = by_name("kpi_query");
    assert_eq!(query.parent_span_id, call.span_id);
    let record = by_name("kpi.v1.ActivityService/RecordActivities");
    let batch = by_name("batch_transaction");
    assert_eq!(batch.parent_span_id, record.span_id);
    let status_code = call
        .attributes
        .iter()
        .find(|a| a.key == "rpc.grpc.status_code")
        .and_then(|a| a.value.as_ref())
        .map(|v| format!("{v:?}"));
    assert!(
        status_code.is_some_and(|v| v.contains("IntValue(0)")),
        "{:?}",
        call.attributes
    );

    // No key, secret or email in any span received, of this trace or any
    // other (start-up, key refreshes): the key's id, its public name as
    // `keys list` shows it, may be there: it says who called.
    let everything = format!(
        "{:?}",
        receiver.spans.lock().map(|s| s.clone()).unwrap_or_default()
    );
    // kpi_<12 hex id>_<secret> (the secret's alphabet has '_' too).
    let secret = &key[17..];
    assert!(secret.len() >= 40, "{secret}");
    assert!(
        !everything.contains(secret),
        "the key's secret is in a span"
    );
    assert!(!everything.contains(&key), "the key is in a span");
    assert!(!everything.contains("example.com"), "an email is in a span");
    drop(service);
}
