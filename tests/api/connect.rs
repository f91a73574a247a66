//! Every unary RPC as JSON over plain HTTP (the Connect protocol), driven
//! by the real `curl` (`cargo xtask test` provides it; `CURL` names it):
//! the same answers as gRPC, the same keys, Connect errors with the gRPC
//! details, malformed protobuf refused as the caller's error, a
//! 1000-record ingest.

use kpi_service::{
    proto::pb::{self, kpi_service_client::KpiServiceClient},
    testkit::records,
};

use crate::helpers::{Bearer, TestApp, at};

/// `curl` with `args`; the HTTP status and the body as JSON.
async fn curl(args: &[&str]) -> (u16, serde_json::Value) {
    let bin = std::env::var("CURL").unwrap_or_else(|_| "curl".to_owned());
    let output = tokio::process::Command::new(&bin)
        .args(["--silent", "--show-error", "--write-out", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run curl ({bin}): {e}; use `cargo xtask test`"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (code.trim().parse().unwrap_or(0), json)
}

/// A POST of `body` to `method` with the app's admin key.
async fn post(app: &TestApp, method: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("{}/{method}", app.endpoint);
    let auth = format!("Authorization: Bearer {}", app.admin_key);
    curl(&[
        "-H",
        "Content-Type: application/json",
        "-H",
        &auth,
        "--data-binary",
        body,
        &url,
    ])
    .await
}

fn field_violations(error: &serde_json::Value) -> Vec<String> {
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["type"] == "google.rpc.BadRequest")
        .flat_map(|d| {
            d["debug"]["fieldViolations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v["field"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn curl_gets_the_grpc_answers_as_json_over_http_1_1_and_2() {
    let app = TestApp::spawn().await;
    let (status, team) = post(
        &app,
        "kpi.v1.DirectoryService/UpsertTeam",
        r#"{"team_id": "emea", "display_name": "EMEA"}"#,
    )
    .await;
    assert_eq!(
        (status, team["team"]["teamId"].as_str()),
        (200, Some("emea")),
        "{team}"
    );
    let (status, _) = post(
        &app,
        "kpi.v1.DirectoryService/UpsertRep",
        r#"{"rep_id": "anna", "display_name": "Anna", "team_id": "emea"}"#,
    )
    .await;
    assert_eq!(status, 200);
    app.record(vec![
        records::interaction("i1", "anna", pb::Channel::Call, at("2026-07-02T10:00:00Z")).record(),
    ])
    .await
    .unwrap();

    // The JSON answer is the gRPC answer in proto3 JSON.
    let request = r#"{"subject": {"teamId": "emea"}, "period": {"start_date": "2026-07-01", "end_date": "2026-09-30", "time_zone": "Europe/Berlin"}, "kpis": ["KPI_CALLS", "KPI_WIN_RATE"]}"#;
    let (status, over_http) = post(&app, "kpi.v1.KpiService/GetScorecard", request).await;
    assert_eq!(status, 200, "{over_http}");
    let grpc_request: pb::GetScorecardRequest = serde_json::from_str(request).unwrap();
    let over_grpc =
        KpiServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key))
            .get_scorecard(grpc_request)
            .await
            .unwrap()
            .into_inner();
    assert_eq!(over_http, serde_json::to_value(&over_grpc).unwrap());
    assert_eq!(over_http["entries"][0]["current"]["value"], 1.0);

    // The same over HTTP/2 (prior knowledge), and an empty body is the
    // empty request.
    let url = format!("{}/kpi.v1.KpiService/ListKpis", app.endpoint);
    let auth = format!("Authorization: Bearer {}", app.admin_key);
    let (status, catalog) = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-H",
        &auth,
        &url,
    ])
    .await;
    assert_eq!(status, 200);
    assert_eq!(catalog["kpis"].as_array().map(Vec::len), Some(18));
}

#[tokio::test]
async fn errors_are_connect_errors_with_the_grpc_details() {
    let app = TestApp::spawn().await;
    let url = format!("{}/kpi.v1.KpiService/GetScorecard", app.endpoint);

    // No key: 401, unauthenticated.
    let (status, error) = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "{}",
        &url,
    ])
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("unauthenticated")),
        "{error}"
    );

    // A bad request: 400, every field named as over gRPC.
    let (status, error) = post(
        &app,
        "kpi.v1.KpiService/GetScorecard",
        r#"{"period": {"start_date": "2026-13-01", "end_date": "2026-01-31"}}"#,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_argument")),
        "{error}"
    );
    let mut fields = field_violations(&error);
    fields.sort();
    assert_eq!(fields, ["period.start_date", "subject"], "{error}");
    let reason = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["type"] == "google.rpc.ErrorInfo");
    assert!(
        reason.is_some_and(|d| d["value"].as_str().is_some_and(|v| !v.is_empty())),
        "{error}"
    );

    // Not JSON, or JSON of the wrong shape: 400 saying why.
    let (status, error) = post(&app, "kpi.v1.KpiService/GetScorecard", "{not json").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_argument")),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a kpi.v1.GetScorecardRequest in proto3 JSON")),
        "{error}"
    );
    let (status, error) = post(
        &app,
        "kpi.v1.KpiService/GetScorecard",
        r#"{"kpis": "KPI_NOPE"}"#,
    )
    .await;
    assert_eq!(status, 400, "{error}");

    // Not found, and a read key may not write.
    let (status, error) = post(
        &app,
        "kpi.v1.DirectoryService/GetTeam",
        r#"{"team_id": "nowhere"}"#,
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("not_found")),
        "{error}"
    );
    let reader = app.key(kpi_service::domain::access::Role::Read, None).await;
    app.keys_refreshed().await;
    let (status, error) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-H",
        &format!("Authorization: Bearer {reader}"),
        "--data-binary",
        r#"{"team_id": "t", "display_name": "T"}"#,
        &format!("{}/kpi.v1.DirectoryService/UpsertTeam", app.endpoint),
    ])
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (403, Some("permission_denied")),
        "{error}"
    );

    // The client stream is gRPC only (RecordActivities is its unary form).
    let (status, error) = post(&app, "kpi.v1.ActivityService/StreamActivities", "{}").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("unimplemented")),
        "{error}"
    );
}

/// After refused requests, a Connect call still reaches its method.
async fn a_connect_call_still_answers(app: &TestApp) {
    let (status, error) = post(
        app,
        "kpi.v1.DirectoryService/GetTeam",
        r#"{"team_id": "nope"}"#,
    )
    .await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
}

/// Bytes that are not a valid message of their RPC's request type: the
/// RPC, what is wrong, the bytes.
const MALFORMED: [(&str, &str, &[u8]); 5] = [
    (
        "DirectoryService/GetTeam",
        "an invalid varint",
        &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
    ),
    (
        "DirectoryService/GetTeam",
        "a string that is not UTF-8",
        &[0x0a, 0x02, 0xff, 0xfe],
    ),
    (
        "DirectoryService/GetTeam",
        "a length past the end",
        &[0x0a, 0x10, b'a'],
    ),
    (
        "DirectoryService/GetTeam",
        "a wrong wire type",
        &[0x0d, 0, 0, 0, 0],
    ),
    (
        // records[0].customer.customer_id is not UTF-8.
        "ActivityService/RecordActivities",
        "a nested string that is not UTF-8",
        &[0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe],
    ),
];

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_over_connect_and_grpc() {
    let app = TestApp::spawn().await;
    let auth = format!("Authorization: Bearer {}", app.admin_key);
    let dir = std::env::temp_dir().join(format!("kpi-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (n, (rpc, what, bytes)) in MALFORMED.iter().enumerate() {
        let url = format!("{}/kpi.v1.{rpc}", app.endpoint);
        let request = rpc.rsplit('/').next().unwrap_or_default();
        // Connect: the bare message as application/proto.
        let bare = dir.join(format!("{n}.bin"));
        std::fs::write(&bare, bytes).unwrap();
        let (status, error) = curl(&[
            "-H",
            "Content-Type: application/proto",
            "-H",
            &auth,
            "--data-binary",
            &format!("@{}", bare.display()),
            &url,
        ])
        .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some("invalid_argument")),
            "Connect, {what}: {error}"
        );
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("kpi.v1.{request}Request")),
            "{what}: {message}"
        );
        // gRPC over h2: the same bytes in a gRPC frame.
        let framed = dir.join(format!("{n}.grpc"));
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(bytes);
        std::fs::write(&framed, frame).unwrap();
        let bin = std::env::var("CURL").unwrap_or_else(|_| "curl".to_owned());
        let output = tokio::process::Command::new(&bin)
            .args([
                "--silent",
                "--show-error",
                "--verbose",
                "--http2-prior-knowledge",
            ])
            .args(["-H", "Content-Type: application/grpc", "-H", "TE: trailers"])
            .args(["-H", &auth, "--data-binary"])
            .arg(format!("@{}", framed.display()))
            .arg(&url)
            .output()
            .await
            .unwrap();
        let verbose = String::from_utf8_lossy(&output.stderr).to_ascii_lowercase();
        assert!(
            verbose.contains("grpc-status: 3"),
            "gRPC, {what}: {verbose}"
        );
        assert!(!verbose.contains("grpc-status: 13"), "gRPC, {what}");
    }
    std::fs::remove_dir_all(&dir).ok();
    a_connect_call_still_answers(&app).await;
}

#[tokio::test]
async fn api_requests_that_are_neither_grpc_nor_connect_get_415_or_405_as_connect_errors() {
    let app = TestApp::spawn().await;
    let auth = format!("Authorization: Bearer {}", app.admin_key);
    let url = format!("{}/kpi.v1.DirectoryService/GetTeam", app.endpoint);
    for http in ["--http1.1", "--http2-prior-knowledge"] {
        // curl's default form encoding, text/plain, and no Content-Type.
        for content_type in [
            None,
            Some("Content-Type: text/plain"),
            Some("Content-Type:"),
        ] {
            let mut args = vec![http, "-H", &auth, "--data-binary", "{}"];
            if let Some(header) = content_type {
                args.extend(["-H", header]);
            }
            args.push(&url);
            let (status, error) = curl(&args).await;
            assert_eq!(
                (status, error["code"].as_str()),
                (415, Some("unimplemented")),
                "{http} {content_type:?}: {error}"
            );
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.contains("application/json"), "{message}");
        }
        for method in ["GET", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let (status, error) = curl(&[http, "-X", method, "-H", &auth, &url]).await;
            assert_eq!(
                (status, error["code"].as_str()),
                (405, Some("unimplemented")),
                "{http} {method}: {error}"
            );
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.contains("POST"), "{message}");
        }
    }
    a_connect_call_still_answers(&app).await;
}

#[tokio::test]
async fn a_thousand_records_ingest_in_one_json_post() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let records: Vec<pb::ActivityRecord> = (0..1000)
        .map(|i| {
            records::interaction(
                format!("i{i:04}"),
                "anna",
                pb::Channel::Email,
                at("2026-07-02T10:00:00Z"),
            )
            .record()
        })
        .collect();
    let body = serde_json::to_string(&pb::RecordActivitiesRequest { records }).unwrap();
    let file = std::env::temp_dir().join(format!("kpi-connect-{}.json", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let (status, answer) = post(&app, "kpi.v1.ActivityService/RecordActivities", &data).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["counts"]["inserted"], "1000");
    assert_eq!(app.count("interactions").await, 1000);
    // Sent again: nothing counts twice.
    let (status, answer) = post(&app, "kpi.v1.ActivityService/RecordActivities", &data).await;
    assert_eq!(
        (status, &answer["counts"]["unchanged"]),
        (200, &serde_json::json!("1000"))
    );
    assert_eq!(app.count("interactions").await, 1000);
    std::fs::remove_file(&file).ok();
}

/// A Connect streaming envelope: flags, big-endian length, message.
fn envelope(message: &[u8]) -> Vec<u8> {
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Reads one envelope from curl's output: (flags, JSON).
async fn next_envelope(out: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u8, serde_json::Value) {
    use tokio::io::AsyncReadExt as _;
    let mut head = [0u8; 5];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        out.read_exact(&mut head).await?;
        let mut message =
            vec![0; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize];
        out.read_exact(&mut message).await?;
        Ok::<_, std::io::Error>(message)
    })
    .await;
    let message = match read {
        Ok(Ok(message)) => message,
        other => panic!("no envelope within 10 s: {other:?}"),
    };
    let json = serde_json::from_slice(&message)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&message)));
    (head[0], json)
}

#[tokio::test]
async fn watches_stream_as_connect_json_over_http_1_1_to_curl() {
    let app = TestApp::spawn().await;
    app.upsert_team("emea", "EMEA", "").await.unwrap();
    app.rep_in("anna", "emea").await;
    app.rep_in("bert", "emea").await;
    let now = chrono::Utc::now() - chrono::Duration::minutes(1);
    app.record(vec![
        records::interaction("i1", "anna", pb::Channel::Call, now).record(),
        records::interaction("i2", "bert", pb::Channel::Call, now).record(),
        records::interaction("i3", "bert", pb::Channel::Email, now).record(),
    ])
    .await
    .unwrap();
    let unary = r#"{"kpi": "KPI_INTERACTIONS", "teamId": "emea", "period": {"relative": "RELATIVE_PERIOD_CURRENT_MONTH", "timeZone": "UTC"}}"#;
    let request = unary.replace("}}", r#"}, "minInterval": "0.1s"}"#);
    let body_file = std::env::temp_dir().join(format!("watch-{}.bin", std::process::id()));
    std::fs::write(&body_file, envelope(request.as_bytes())).unwrap();
    let url = format!("{}/kpi.v1.KpiService/WatchLeaderboard", app.endpoint);
    // A read key of its own, to revoke while the stream is open.
    let read_key = app.key(kpi_service::domain::access::Role::Read, None).await;
    app.keys_refreshed().await;
    let auth = format!("Authorization: Bearer {read_key}");
    let bin = std::env::var("CURL").unwrap_or_else(|_| "curl".to_owned());
    let mut curl = tokio::process::Command::new(&bin)
        .args(["--silent", "--show-error", "--no-buffer", "--http1.1"])
        .args(["-H", "Content-Type: application/connect+json"])
        .args(["-H", "Connect-Protocol-Version: 1", "-H", &auth])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run curl ({bin}): {e}"));
    let mut out = curl.stdout.take().unwrap();

    // The first message is the leaderboard a unary call gives.
    let (flags, first) = next_envelope(&mut out).await;
    assert_eq!(flags, 0, "{first}");
    assert_eq!(first["reason"], "WATCH_REASON_INITIAL");
    let unary: pb::GetLeaderboardRequest = serde_json::from_str(unary).unwrap();
    let board =
        KpiServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key))
            .get_leaderboard(unary)
            .await
            .unwrap()
            .into_inner();
    assert_eq!(first["leaderboard"], serde_json::to_value(&board).unwrap());
    let order = |json: &serde_json::Value| -> Vec<String> {
        json["leaderboard"]["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["repId"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(order(&first), ["bert", "anna"]);

    // A change arrives on the same response, as the next envelope.
    app.record(vec![
        records::interaction("i4", "anna", pb::Channel::Meeting, now).record(),
        records::interaction("i5", "anna", pb::Channel::Meeting, now).record(),
    ])
    .await
    .unwrap();
    let (flags, changed) = next_envelope(&mut out).await;
    assert_eq!(
        (flags, &changed["reason"]),
        (0, &serde_json::json!("WATCH_REASON_CHANGED"))
    );
    assert_eq!(order(&changed), ["anna", "bert"]);

    // Revoked while open: the stream ends with an end-of-stream envelope
    // holding the error, and the response ends.
    kpi_service::store::keys::revoke(&app.db, &read_key[4..16])
        .await
        .unwrap();
    let (flags, end) = next_envelope(&mut out).await;
    assert_eq!(flags, 2, "{end}");
    assert_eq!(end["error"]["code"], "unauthenticated", "{end}");
    let finished = tokio::time::timeout(std::time::Duration::from_secs(10), curl.wait()).await;
    assert!(
        finished.is_ok_and(|status| status.is_ok_and(|s| s.success())),
        "the response did not end"
    );

    // Errors before the first message too: HTTP 200 and only the end.
    let mut curl = tokio::process::Command::new(&bin)
        .args(["--silent", "--show-error", "--http1.1"])
        .args(["-H", "Content-Type: application/connect+json"])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = curl.stdout.take().unwrap();
    let (flags, end) = next_envelope(&mut out).await;
    assert_eq!(flags, 2, "{end}");
    assert_eq!(end["error"]["code"], "unauthenticated", "{end}");
    let finished = tokio::time::timeout(std::time::Duration::from_secs(10), curl.wait()).await;
    assert!(finished.is_ok_and(|status| status.is_ok_and(|s| s.success())));
    std::fs::remove_file(&body_file).ok();
}
