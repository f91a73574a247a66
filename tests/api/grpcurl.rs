//! End to end with a real outside client: the `kpi-service` binary, started
//! as a user would (embedded PostgreSQL, no DATABASE_URL), driven by the
//! real `grpcurl` (`cargo xtask test` provides it; see `helpers::run_grpcurl`).

use std::{
    os::unix::fs::PermissionsExt,
    process::Command,
    time::{Duration, Instant},
};

use kpi_service::embedded_pg::EmbeddedPostgres;

use crate::helpers::{grpcurl_output, start_service, watched_dir};

/// `grpcurl -plaintext <flags> <address> <command>`, which must succeed.
fn grpcurl(addr: &str, flags: &[&str], command: &[&str]) -> String {
    let args: Vec<&str> = ["-plaintext"]
        .into_iter()
        .chain(flags.iter().copied())
        .chain([addr])
        .chain(command.iter().copied())
        .collect();
    let output = grpcurl_output(&args);
    assert!(
        output.status.success(),
        "grpcurl {flags:?} {command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn grpcurl_explores_and_uses_the_service_on_its_embedded_postgres() {
    let data_dir = watched_dir("e2e");
    let service = start_service(&data_dir, None);
    // The first start wrote an admin key, readable by its owner only.
    let key_file = data_dir.join("admin.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.key must be private");
    let header = format!("authorization: Bearer {}", service.admin_key().unwrap());
    let auth: &[&str] = &["-H", &header];

    // Health and reflection need no key.
    let services = grpcurl(&service.addr, &[], &["list"]);
    for expected in [
        "kpi.v1.DirectoryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.contains(expected),
            "{expected} missing from:\n{services}"
        );
    }
    let described = grpcurl(&service.addr, &[], &["describe", "kpi.v1.DirectoryService"]);
    assert!(described.contains("rpc UpsertRep"), "{described}");
    let health = grpcurl(&service.addr, &[], &["grpc.health.v1.Health/Check"]);
    assert!(health.contains("\"SERVING\""), "{health}");

    let without_key = grpcurl_output(&[
        "-plaintext",
        "-d",
        r#"{"rep_id": "anna"}"#,
        &service.addr,
        "kpi.v1.DirectoryService/GetRep",
    ]);
    assert!(
        String::from_utf8_lossy(&without_key.stderr).contains("Unauthenticated"),
        "a call without a key must be refused"
    );
    grpcurl(
        &service.addr,
        &[
            "-H",
            &header,
            "-d",
            r#"{"team_id": "emea", "display_name": "EMEA"}"#,
        ],
        &["kpi.v1.DirectoryService/UpsertTeam"],
    );
    let upserted = grpcurl(
        &service.addr,
        &[
            "-H",
            &header,
            "-d",
            r#"{"rep_id": "anna", "display_name": "Anna Svensson", "email": "anna@example.com", "team_id": "emea"}"#,
        ],
        &["kpi.v1.DirectoryService/UpsertRep"],
    );
    assert!(upserted.contains("\"teamId\": \"emea\""), "{upserted}");
    let fetched = grpcurl(
        &service.addr,
        &[auth[0], auth[1], "-d", r#"{"rep_id": "anna"}"#],
        &["kpi.v1.DirectoryService/GetRep"],
    );
    assert!(
        fetched.contains("\"displayName\": \"Anna Svensson\""),
        "{fetched}"
    );
    // The README's deal, then its deletion, in grpcurl's JSON.
    let recorded = grpcurl(
        &service.addr,
        &[
            "-H",
            &header,
            "-d",
            r#"{"records": [{"deal": {"deal_id": "crm-deal-77", "rep_id": "anna", "customer_id": "acme", "amount": {"currency_code": "USD", "units": 12500, "nanos": 500000000}, "stage": "DEAL_STAGE_WON", "created_at": "2026-09-01T09:00:00Z", "closed_at": "2026-11-03T16:30:00Z", "updated_at": "2026-11-03T16:30:00Z"}}]}"#,
        ],
        &["kpi.v1.ActivityService/RecordActivities"],
    );
    assert!(recorded.contains("\"inserted\": \"1\""), "{recorded}");
    // The records behind anna's November revenue: that deal, converted.
    let explained = grpcurl(
        &service.addr,
        &[
            "-H",
            &header,
            "-d",
            r#"{"subject": {"rep_id": "anna"}, "kpi": "KPI_REVENUE", "period": {"start_date": "2026-11-01", "end_date": "2026-11-30", "time_zone": "UTC"}}"#,
        ],
        &["kpi.v1.KpiService/ExplainKpi"],
    );
    assert!(
        explained.contains("\"recordId\": \"crm-deal-77\"")
            && explained.contains("\"numerator\": \"12500.5\"")
            && explained.contains("\"convertedAmount\""),
        "{explained}"
    );
    let deleted = grpcurl(
        &service.addr,
        &[
            "-H",
            &header,
            "-d",
            r#"{"records": [{"deletion": {"record_type": "RECORD_TYPE_DEAL", "record_id": "crm-deal-77", "updated_at": "2026-11-20T08:00:00Z"}}]}"#,
        ],
        &["kpi.v1.ActivityService/RecordActivities"],
    );
    assert!(deleted.contains("\"deleted\": \"1\""), "{deleted}");
    // The README's relative period: this quarter, whatever today is.
    let quarter = grpcurl(
        &service.addr,
        &[
            "-H",
            &header,
            "-d",
            r#"{"subject": {"rep_id": "anna"}, "period": {"relative": "RELATIVE_PERIOD_CURRENT_QUARTER", "time_zone": "Europe/Berlin"}, "kpis": ["KPI_DEALS_WON"]}"#,
        ],
        &["kpi.v1.KpiService/GetScorecard"],
    );
    assert!(
        quarter.contains("\"relative\": \"RELATIVE_PERIOD_CURRENT_QUARTER\"")
            && quarter.contains("\"startDate\""),
        "{quarter}"
    );

    // If the embedded PostgreSQL dies, the service starts it again.
    let pg = EmbeddedPostgres::new(&data_dir).unwrap();
    let postmaster = pg.running_pid().unwrap();
    Command::new("kill")
        .args(["-KILL", &postmaster.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    loop {
        if pg.running_pid().is_some_and(|pid| pid != postmaster) {
            let health =
                grpcurl_output(&["-plaintext", &service.addr, "grpc.health.v1.Health/Check"]);
            if String::from_utf8_lossy(&health.stdout).contains("\"SERVING\"") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the embedded PostgreSQL was not restarted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let fetched = grpcurl(
        &service.addr,
        &[auth[0], auth[1], "-d", r#"{"rep_id": "anna"}"#],
        &["kpi.v1.DirectoryService/GetRep"],
    );
    assert!(fetched.contains("Anna Svensson"), "{fetched}");

    // SIGTERM stops the service and its PostgreSQL.
    let took = service.terminate().unwrap();
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    assert_eq!(pg.running_pid(), None, "PostgreSQL left running");

    // The next start finds the data again.
    let service = start_service(&data_dir, None);
    let fetched = grpcurl(
        &service.addr,
        &[auth[0], auth[1], "-d", r#"{"rep_id": "anna"}"#],
        &["kpi.v1.DirectoryService/GetRep"],
    );
    assert!(fetched.contains("Anna Svensson"), "{fetched}");
    service.terminate().unwrap();
    assert_eq!(pg.running_pid(), None);
}
