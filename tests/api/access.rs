//! Access control: keys, roles, team scopes, revocation, secrets, TLS.
//! One concern (who may call and see what, over which transport); most of
//! its length is the table of every RPC against every role.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use kpi_service::{
    domain::access::Role,
    proto::pb::{
        self, activity_service_client::ActivityServiceClient,
        directory_service_client::DirectoryServiceClient, kpi_service_client,
        target_service_client,
    },
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use crate::helpers::{Bearer, TestApp, rep, run_grpcurl, start_service_with, watched_dir};

#[derive(Debug, Clone, Copy)]
enum Rpc {
    UpsertTeam,
    GetTeam,
    ListTeams,
    UpsertRep,
    GetRep,
    ListReps,
    RecordActivities,
    StreamActivities,
    ListKpis,
    GetScorecard,
    GetKpiSeries,
    GetLeaderboard,
    SetTarget,
    ListTargets,
    DeleteTarget,
}

const ALL: [Rpc; 15] = [
    Rpc::UpsertTeam,
    Rpc::GetTeam,
    Rpc::ListTeams,
    Rpc::UpsertRep,
    Rpc::GetRep,
    Rpc::ListReps,
    Rpc::RecordActivities,
    Rpc::StreamActivities,
    Rpc::ListKpis,
    Rpc::GetScorecard,
    Rpc::GetKpiSeries,
    Rpc::GetLeaderboard,
    Rpc::SetTarget,
    Rpc::ListTargets,
    Rpc::DeleteTarget,
];

/// Calls `rpc` with a plausible request as `token` (None: no key); the
/// status code (OK included).
async fn call(channel: Channel, token: Option<&str>, rpc: Rpc) -> Code {
    let bearer = Bearer::new(token.unwrap_or("none"));
    let mut directory = DirectoryServiceClient::new(channel.clone());
    let mut directory_as =
        DirectoryServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut activity_as = ActivityServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut kpi_as =
        kpi_service_client::KpiServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut targets_as =
        target_service_client::TargetServiceClient::with_interceptor(channel.clone(), bearer);
    let period = || {
        Some(pb::Period {
            start_date: "2026-04-01".into(),
            end_date: "2026-06-30".into(),
            time_zone: String::new(),
            ..Default::default()
        })
    };
    let team = || {
        Some(pb::Subject {
            subject: Some(pb::subject::Subject::TeamId("t1".into())),
        })
    };
    let record = || pb::ActivityRecord {
        record: Some(pb::activity_record::Record::Interaction(pb::Interaction {
            interaction_id: "i1".into(),
            rep_id: "anna".into(),
            customer_id: String::new(),
            channel: pb::Channel::Call as i32,
            occurred_at: Some(crate::helpers::ts("2026-05-01T10:00:00Z")),
            duration_seconds: None,
            updated_at: Some(crate::helpers::ts("2026-05-01T10:00:00Z")),
        })),
    };
    macro_rules! dir {
        ($method:ident, $req:expr) => {
            match token {
                Some(_) => directory_as.$method($req).await.err(),
                None => directory.$method($req).await.err(),
            }
        };
    }
    let error = match rpc {
        Rpc::UpsertTeam => dir!(
            upsert_team,
            pb::UpsertTeamRequest {
                team_id: "t1".into(),
                display_name: "Team 1".into(),
                parent_team_id: String::new(),
            }
        ),
        Rpc::GetTeam => dir!(
            get_team,
            pb::GetTeamRequest {
                team_id: "t1".into()
            }
        ),
        Rpc::ListTeams => dir!(list_teams, pb::ListTeamsRequest::default()),
        Rpc::UpsertRep => dir!(upsert_rep, rep("anna", "t1")),
        Rpc::GetRep => dir!(
            get_rep,
            pb::GetRepRequest {
                rep_id: "anna".into()
            }
        ),
        Rpc::ListReps => dir!(list_reps, pb::ListRepsRequest::default()),
        Rpc::RecordActivities => activity_as
            .record_activities(pb::RecordActivitiesRequest {
                records: vec![record()],
            })
            .await
            .err(),
        Rpc::StreamActivities => activity_as
            .stream_activities(futures::stream::iter(vec![pb::StreamActivitiesRequest {
                records: vec![record()],
            }]))
            .await
            .err(),
        Rpc::ListKpis => kpi_as.list_kpis(pb::ListKpisRequest {}).await.err(),
        Rpc::GetScorecard => kpi_as
            .get_scorecard(pb::GetScorecardRequest {
                subject: team(),
                period: period(),
                kpis: vec![],
            })
            .await
            .err(),
        Rpc::GetKpiSeries => kpi_as
            .get_kpi_series(pb::GetKpiSeriesRequest {
                subject: team(),
                kpi: pb::Kpi::Calls as i32,
                period: period(),
                granularity: pb::Granularity::Month as i32,
            })
            .await
            .err(),
        Rpc::GetLeaderboard => kpi_as
            .get_leaderboard(pb::GetLeaderboardRequest {
                kpi: pb::Kpi::Calls as i32,
                team_id: "t1".into(),
                period: period(),
                min_sample: None,
                limit: 0,
            })
            .await
            .err(),
        Rpc::SetTarget => targets_as
            .set_target(pb::SetTargetRequest {
                kpi: pb::Kpi::Calls as i32,
                subject: team(),
                start_date: "2026-04-01".into(),
                end_date: "2026-06-30".into(),
                time_zone: String::new(),
                value: 10.0,
            })
            .await
            .err(),
        Rpc::ListTargets => targets_as
            .list_targets(pb::ListTargetsRequest::default())
            .await
            .err(),
        // NOT_FOUND (no such target) means the call was let through.
        Rpc::DeleteTarget => targets_as
            .delete_target(pb::DeleteTargetRequest {
                target_id: "t-none".into(),
            })
            .await
            .err()
            .filter(|s| s.code() != Code::NotFound),
    };
    error.map_or(Code::Ok, |status| status.code())
}

fn allowed(role: Role, rpc: Rpc) -> bool {
    match rpc {
        Rpc::UpsertTeam | Rpc::UpsertRep | Rpc::RecordActivities | Rpc::StreamActivities => {
            role != Role::Read
        }
        Rpc::GetTeam
        | Rpc::GetRep
        | Rpc::ListTeams
        | Rpc::ListReps
        | Rpc::ListKpis
        | Rpc::GetScorecard
        | Rpc::GetKpiSeries
        | Rpc::GetLeaderboard
        | Rpc::ListTargets => role != Role::Ingest,
        Rpc::SetTarget | Rpc::DeleteTarget => role == Role::Admin,
    }
}

#[tokio::test]
async fn each_role_is_allowed_and_denied_where_it_should_be_for_every_rpc() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let keys = [
        (Role::Ingest, app.key(Role::Ingest, None).await),
        (Role::Read, app.key(Role::Read, None).await),
        (Role::Admin, app.key(Role::Admin, None).await),
    ];
    app.keys_refreshed().await;
    for rpc in ALL {
        assert_eq!(
            call(app.channel.clone(), None, rpc).await,
            Code::Unauthenticated,
            "{rpc:?} without a key"
        );
        assert_eq!(
            call(
                app.channel.clone(),
                Some("kpi_0123456789ab_notarealsecret"),
                rpc
            )
            .await,
            Code::Unauthenticated,
            "{rpc:?} with an unknown key"
        );
        assert_eq!(
            call(app.channel.clone(), Some("not-a-key"), rpc).await,
            Code::Unauthenticated,
            "{rpc:?} with a malformed key"
        );
        for (role, key) in &keys {
            let code = call(app.channel.clone(), Some(key), rpc).await;
            if allowed(*role, rpc) {
                assert_eq!(code, Code::Ok, "{role} calling {rpc:?}");
            } else {
                assert_eq!(code, Code::PermissionDenied, "{role} calling {rpc:?}");
            }
        }
    }
    // A wrong secret for a real key id is refused too.
    let (_, admin) = &keys[2];
    let forged = format!("{}x", &admin[..admin.len() - 1]);
    assert_eq!(
        call(app.channel.clone(), Some(&forged), Rpc::GetTeam).await,
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_a_second() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    let key = app.key(Role::Read, None).await;
    app.keys_refreshed().await;
    assert_eq!(
        call(app.channel.clone(), Some(&key), Rpc::GetTeam).await,
        Code::Ok
    );
    let key_id = &key[4..16];
    kpi_service::store::keys::revoke(&app.db, key_id)
        .await
        .unwrap();
    let revoked = Instant::now();
    loop {
        let code = call(app.channel.clone(), Some(&key), Rpc::GetTeam).await;
        if code == Code::Unauthenticated {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_millis(1500),
            "still accepted after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("revocation took effect after {:?}", revoked.elapsed());
}

#[tokio::test]
async fn a_key_that_expires_stops_working_soon_after_its_end() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    let key = kpi_service::store::keys::create(
        &app.db,
        "brief",
        Role::Read,
        None,
        Some(Duration::from_secs(5)),
    )
    .await
    .unwrap()
    .token;
    // Its end, by the database's clock (the one that checks it).
    let (ends, db_now): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT expires_at, now() FROM api_keys WHERE name = 'brief'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let lifetime = ends - db_now;
    assert!(
        lifetime > chrono::Duration::milliseconds(4900) && lifetime <= chrono::Duration::seconds(5),
        "{lifetime}"
    );
    let accepted = Instant::now();
    while call(app.channel.clone(), Some(&key), Rpc::GetTeam).await != Code::Ok {
        assert!(
            accepted.elapsed() < Duration::from_secs(4),
            "never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let code = call(app.channel.clone(), Some(&key), Rpc::GetTeam).await;
        let late = chrono::Utc::now() - ends;
        if code == Code::Unauthenticated {
            assert!(
                late >= chrono::Duration::milliseconds(-100),
                "refused {late} before its end"
            );
            eprintln!("expiry took effect {late} after the end");
            break;
        }
        assert!(
            late < chrono::Duration::seconds(3),
            "still accepted {late} after its end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The CLI: lifetimes are checked, `keys list` shows the end.
    let cli = |args: &[&str]| {
        let output = Command::new(crate::helpers::BIN)
            .args(args)
            .env("DATABASE_URL", &app.url)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, _, err) = cli(&["keys", "share", "--team", "t1", "--expires", "30s"]);
    assert!(!ok && err.contains("1 minute to 10 years"), "{err}");
    let (ok, _, err) = cli(&["keys", "share", "--team", "nope", "--expires", "1d"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, link, err) = cli(&["keys", "share", "--team", "t1", "--expires", "7d"]);
    assert!(ok, "{err}");
    assert!(
        link.trim().starts_with("http://127.0.0.1:50051/#key=kpi_"),
        "{link}"
    );
    let (ok, list, _) = cli(&["keys", "list"]);
    assert!(ok);
    let week = (chrono::Utc::now() + chrono::Duration::days(7))
        .format("%Y-%m-%d")
        .to_string();
    let shared = list
        .lines()
        .find(|l| l.contains("share link for team t1"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(list.contains("EXPIRES") && shared.contains(&week), "{list}");
    assert!(
        shared.contains(" read ") && shared.contains(" t1 "),
        "{shared}"
    );
}

#[tokio::test]
async fn a_team_scoped_read_key_sees_only_its_teams_and_their_reps() {
    let app = TestApp::spawn().await;
    app.upsert_team("emea", "EMEA", "").await.unwrap();
    app.upsert_team("emea-west", "EMEA West", "emea")
        .await
        .unwrap();
    app.upsert_team("emea-west-pod", "Pod", "emea-west")
        .await
        .unwrap();
    app.upsert_team("amer", "AMER", "").await.unwrap();
    app.rep_in("top", "emea").await;
    app.rep_in("west", "emea-west").await;
    app.rep_in("pod", "emea-west-pod").await;
    app.rep_in("us", "amer").await;
    let key = app.key(Role::Read, Some("emea-west")).await;
    app.keys_refreshed().await;
    let mut client = app.directory_as(&key);

    let reps = client
        .list_reps(pb::ListRepsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = reps.reps.iter().map(|r| r.rep_id.as_str()).collect();
    assert_eq!(ids, ["pod", "west"]);
    let teams = client
        .list_teams(pb::ListTeamsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = teams.teams.iter().map(|t| t.team_id.as_str()).collect();
    assert_eq!(ids, ["emea-west", "emea-west-pod"]);

    assert!(
        client
            .get_rep(pb::GetRepRequest {
                rep_id: "pod".into()
            })
            .await
            .is_ok()
    );
    for outside in ["top", "us", "no-such-rep"] {
        let status = client
            .get_rep(pb::GetRepRequest {
                rep_id: outside.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{outside}");
    }
    for outside in ["emea", "amer", "no-such-team"] {
        let status = client
            .get_team(pb::GetTeamRequest {
                team_id: outside.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{outside}");
        let status = client
            .list_reps(pb::ListRepsRequest {
                team_id: outside.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{outside}");
    }
    let nested = client
        .list_reps(pb::ListRepsRequest {
            team_id: "emea-west".into(),
            include_sub_teams: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nested.reps.len(), 2);
    // A read key may not write, scoped or not.
    let denied = client.upsert_rep(rep("x", "emea-west")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn keys_are_never_stored_or_logged_in_clear() {
    let app = TestApp::spawn().await;
    let dir = watched_dir("secrets");
    let service = start_service_with(&dir, Some(&app.url), &[], "trace");
    let channel = Channel::from_shared(format!("http://{}", service.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        DirectoryServiceClient::with_interceptor(channel.clone(), Bearer::new(&app.admin_key));
    client
        .upsert_team(pb::UpsertTeamRequest {
            team_id: "t1".into(),
            display_name: "Team 1".into(),
            parent_team_id: String::new(),
        })
        .await
        .unwrap();
    let mut anna = rep("anna", "t1");
    anna.email = "anna.secret-address@example.com".into();
    client.upsert_rep(anna).await.unwrap();
    client
        .get_rep(pb::GetRepRequest {
            rep_id: "anna".into(),
        })
        .await
        .unwrap();
    let wrong = call(
        channel,
        Some("kpi_0123456789ab_wrongsecretwrongsecret"),
        Rpc::GetTeam,
    )
    .await;
    assert_eq!(wrong, Code::Unauthenticated);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let secret = &app.admin_key[17..];
    let log = service.log();
    assert!(
        log.contains("\"target\":\"audit\""),
        "no audit events logged"
    );
    assert!(log.contains("kpi.v1.DirectoryService/UpsertRep"));
    for forbidden in [
        secret,
        "wrongsecretwrongsecret",
        "Bearer",
        "anna.secret-address",
    ] {
        assert!(!log.contains(forbidden), "the log contains {forbidden}");
    }
    let stored: Vec<String> = sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(!stored.is_empty());
    for row in stored {
        assert!(!row.contains(secret), "a secret is stored in clear");
    }
}

#[tokio::test]
async fn the_keys_command_creates_lists_and_revokes() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    let keys = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &app.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let token = keys(&[
        "create",
        "--name",
        "dashboard",
        "--role",
        "read",
        "--team",
        "t1",
    ]);
    let token = token.trim();
    assert!(token.starts_with("kpi_"), "{token}");
    let key_id = &token[4..16];
    let listed = keys(&["list"]);
    assert!(listed.contains(key_id) && listed.contains("dashboard") && listed.contains("t1"));
    assert!(!listed.contains(&token[17..]), "list shows a secret");
    app.keys_refreshed().await;
    assert_eq!(
        call(app.channel.clone(), Some(token), Rpc::GetTeam).await,
        Code::Ok
    );
    keys(&["revoke", key_id]);
    assert!(
        keys(&["list"])
            .lines()
            .any(|l| l.contains(key_id) && l.contains("UTC") && l.matches("UTC").count() >= 2)
    );
    app.keys_refreshed().await;
    assert_eq!(
        call(app.channel.clone(), Some(token), Rpc::GetTeam).await,
        Code::Unauthenticated
    );
}

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    rogue_cert: String,
    rogue_key: String,
}

/// A CA, a server certificate for localhost/127.0.0.1, a client
/// certificate from the CA and one from another CA, all made now.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], &issuer);
    let (client_cert, client_key) = leaf(vec!["client".into()], &issuer);
    let rogue_ca_key = KeyPair::generate().unwrap();
    let mut rogue_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    rogue_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let rogue_issuer = Issuer::new(rogue_params, rogue_ca_key);
    let (rogue_cert, rogue_key) = leaf(vec!["rogue".into()], &rogue_issuer);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        rogue_cert,
        rogue_key,
    }
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn tls_and_mutual_tls_work_with_grpcurl_and_tonic_and_refuse_strangers() {
    let app = TestApp::spawn().await;
    let dir = watched_dir("tls");
    let pki = pki();
    let ca = write(&dir, "ca.pem", &pki.ca);
    let cert = write(&dir, "server.pem", &pki.server_cert);
    let key = write(&dir, "server.key", &pki.server_key);
    let client_cert = write(&dir, "client.pem", &pki.client_cert);
    let client_key = write(&dir, "client.key", &pki.client_key);
    let rogue_cert = write(&dir, "rogue.pem", &pki.rogue_cert);
    let rogue_key = write(&dir, "rogue.key", &pki.rogue_key);
    let header = format!("authorization: Bearer {}", app.admin_key);

    // TLS.
    let service = start_service_with(
        &dir.join("tls-only"),
        Some(&app.url),
        &["--tls-cert", &cert, "--tls-key", &key],
        "info",
    );
    let (ok, out) = run_grpcurl(&[
        "-cacert",
        &ca,
        "-H",
        &header,
        &service.addr,
        "kpi.v1.DirectoryService/ListTeams",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run_grpcurl(&["-plaintext", &service.addr, "list"]);
    assert!(!ok, "plaintext must fail against TLS: {out}");
    drop(service);

    // Mutual TLS.
    let service = start_service_with(
        &dir.join("mtls"),
        Some(&app.url),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
        "info",
    );
    let (ok, out) = run_grpcurl(&[
        "-cacert",
        &ca,
        "-cert",
        &client_cert,
        "-key",
        &client_key,
        "-H",
        &header,
        &service.addr,
        "kpi.v1.DirectoryService/ListTeams",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run_grpcurl(&["-cacert", &ca, &service.addr, "list"]);
    assert!(!ok, "a client without a certificate must fail: {out}");
    let (ok, out) = run_grpcurl(&[
        "-cacert",
        &ca,
        "-cert",
        &rogue_cert,
        "-key",
        &rogue_key,
        &service.addr,
        "list",
    ]);
    assert!(!ok, "a certificate from another CA must fail: {out}");

    let tls = |identity: Option<(&str, &str)>| {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    };
    let endpoint = format!("https://{}", service.addr);
    let channel = Channel::from_shared(endpoint.clone())
        .unwrap()
        .tls_config(tls(Some((&pki.client_cert, &pki.client_key))))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = DirectoryServiceClient::with_interceptor(channel, Bearer::new(&app.admin_key));
    assert!(
        client
            .list_teams(pb::ListTeamsRequest::default())
            .await
            .is_ok()
    );
    for identity in [
        None,
        Some((pki.rogue_cert.as_str(), pki.rogue_key.as_str())),
    ] {
        let refused = match Channel::from_shared(endpoint.clone())
            .unwrap()
            .tls_config(tls(identity))
            .unwrap()
            .connect()
            .await
        {
            Err(_) => true,
            Ok(channel) => {
                DirectoryServiceClient::with_interceptor(channel, Bearer::new(&app.admin_key))
                    .list_teams(pb::ListTeamsRequest::default())
                    .await
                    .is_err()
            }
        };
        assert!(
            refused,
            "a tonic client with {:?} was let in",
            identity.map(|_| "a rogue certificate")
        );
    }
}

#[test]
fn plaintext_on_a_public_address_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("without TLS"));
}

#[tokio::test]
async fn kpi_and_target_rpcs_follow_roles_and_team_scopes() {
    use kpi_service::proto::pb::{
        kpi_service_client::KpiServiceClient, target_service_client::TargetServiceClient,
    };
    let app = TestApp::spawn().await;
    app.upsert_team("region", "Region", "").await.unwrap();
    app.upsert_team("team-a", "Team A", "region").await.unwrap();
    app.upsert_team("team-b", "Team B", "region").await.unwrap();
    app.rep_in("anna", "team-a").await;
    app.rep_in("cara", "team-b").await;
    let scoped = app.key(Role::Read, Some("team-b")).await;
    let reader = app.key(Role::Read, None).await;
    let ingest = app.key(Role::Ingest, None).await;
    app.keys_refreshed().await;
    let kpi =
        |token: &str| KpiServiceClient::with_interceptor(app.channel.clone(), Bearer::new(token));
    let targets = |token: &str| {
        TargetServiceClient::with_interceptor(app.channel.clone(), Bearer::new(token))
    };
    let period = || {
        Some(pb::Period {
            start_date: "2026-04-01".into(),
            end_date: "2026-06-30".into(),
            time_zone: String::new(),
            ..Default::default()
        })
    };
    let subject = |team: bool, id: &str| {
        Some(pb::Subject {
            subject: Some(if team {
                pb::subject::Subject::TeamId(id.into())
            } else {
                pb::subject::Subject::RepId(id.into())
            }),
        })
    };
    let scorecard = |team: bool, id: &str| pb::GetScorecardRequest {
        subject: subject(team, id),
        period: period(),
        kpis: vec![],
    };

    // Roles.
    assert!(
        kpi(&reader)
            .get_scorecard(scorecard(true, "team-a"))
            .await
            .is_ok()
    );
    let denied = kpi(&ingest)
        .get_scorecard(scorecard(true, "team-a"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let set = pb::SetTargetRequest {
        kpi: pb::Kpi::Calls as i32,
        subject: subject(true, "team-b"),
        start_date: "2026-04-01".into(),
        end_date: "2026-06-30".into(),
        time_zone: String::new(),
        value: 10.0,
    };
    let denied = targets(&reader).set_target(set.clone()).await.unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "targets are for admins"
    );
    let admin_targets =
        TargetServiceClient::with_interceptor(app.channel.clone(), Bearer::new(&app.admin_key));
    admin_targets.clone().set_target(set).await.unwrap();
    admin_targets
        .clone()
        .set_target(pb::SetTargetRequest {
            subject: subject(true, "team-a"),
            kpi: pb::Kpi::Calls as i32,
            start_date: "2026-04-01".into(),
            end_date: "2026-06-30".into(),
            time_zone: String::new(),
            value: 5.0,
        })
        .await
        .unwrap();
    // Rep targets follow the rep's current team: cara is in team-b, anna
    // in team-a.
    for rep in ["cara", "anna"] {
        admin_targets
            .clone()
            .set_target(pb::SetTargetRequest {
                subject: subject(false, rep),
                kpi: pb::Kpi::Calls as i32,
                start_date: "2026-04-01".into(),
                end_date: "2026-06-30".into(),
                time_zone: String::new(),
                value: 3.0,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        targets(&reader)
            .list_targets(pb::ListTargetsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .targets
            .len(),
        4,
        "an unscoped read key sees every target"
    );

    // A key scoped to team-b sees team-b and cara, nothing of team-a.
    let mut scoped_kpi = kpi(&scoped);
    assert!(
        scoped_kpi
            .get_scorecard(scorecard(true, "team-b"))
            .await
            .is_ok()
    );
    assert!(
        scoped_kpi
            .get_scorecard(scorecard(false, "cara"))
            .await
            .is_ok()
    );
    for (team, id) in [
        (true, "team-a"),
        (true, "region"),
        (false, "anna"),
        (false, "nobody"),
    ] {
        let status = scoped_kpi
            .get_scorecard(scorecard(team, id))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{id}");
        let status = scoped_kpi
            .get_kpi_series(pb::GetKpiSeriesRequest {
                subject: subject(team, id),
                kpi: pb::Kpi::Calls as i32,
                period: period(),
                granularity: pb::Granularity::Month as i32,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{id}");
    }
    let board = |team: &str| pb::GetLeaderboardRequest {
        kpi: pb::Kpi::Calls as i32,
        team_id: team.into(),
        period: period(),
        min_sample: None,
        limit: 0,
    };
    let status = scoped_kpi
        .get_leaderboard(board("region"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let entries = scoped_kpi
        .get_leaderboard(board("team-b"))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let reps: Vec<_> = entries.iter().map(|e| e.rep_id.as_str()).collect();
    assert_eq!(reps, ["cara"]);
    let listed = targets(&scoped)
        .list_targets(pb::ListTargetsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .targets;
    let subjects: Vec<_> = listed
        .iter()
        .filter_map(|t| t.target.as_ref().and_then(|t| t.subject.clone()))
        .collect();
    assert_eq!(
        subjects,
        [
            subject(false, "cara").unwrap(),
            subject(true, "team-b").unwrap()
        ],
        "only the targets of team-b and of the reps now in it (reps first)"
    );
}
