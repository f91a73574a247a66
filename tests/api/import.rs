//! `kpi-service import`, run as its own process (the built binary) against
//! a real server: CSV and NDJSON files with bad lines among the good ones.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::{AtomicUsize, Ordering},
};

use kpi_service::{domain::access::Role, proto::pb};
use tokio::process::Command;

use crate::helpers::{TestApp, at};

/// A scratch directory, removed when dropped.
struct Workdir(PathBuf);

impl Workdir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kpi-import-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `kpi-service import` against the app with `key` (without blocking
/// the test's runtime, which serves the app).
async fn import(app: &TestApp, key: &str, args: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpi-service"))
        .args(["import", "--target", &app.endpoint, "--key", key])
        .args(args)
        .args(files)
        .env_remove("KPI_LISTEN")
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// (file name, line, reason) of every line of a reject file.
fn rejects(path: &Path) -> Vec<(String, u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let file = value["file"].as_str().unwrap_or_default();
            let name = Path::new(file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                name,
                value["line"].as_u64().unwrap_or_default(),
                value["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

const TEAMS: &str = "\
team_id,display_name,parent_team_id
emea-north,EMEA North,emea
emea,EMEA,
ghost,Ghost,no-such-team
";

const REPS: &str = "\
rep_id,display_name,email,active,team_id,team_effective_time
anna,Anna Berg,anna@example.com,yes,emea,
anna,Anna Berg,anna@example.com,,emea-north,2025-03-01
bob,Bob,not-an-email,,emea,
carl,Carl,,true,emea-north,
dora,Dora,,maybe,emea,
";

// Times without an offset are Europe/Berlin (--time-zone). Line 7-8 is
// one row (a quoted line break); line 9 lacks fields.
const DEALS: &str = "\
deal_id,rep_id,customer_id,amount,currency,stage,created_at,closed_at,updated_at,Pipeline
d1,anna,c1,1200.50,EUR,Closed Won,2025-01-02,2025-02-01 10:00,2025-02-01T10:00:00Z,x
d2,anna,,\"1,200\",USD,won,2025-01-02,2025-02-01,2025-02-01T10:00:00Z,x
d3,carl,,99,USD,lost,2025-01-05,2025-01-04,2025-02-01T10:00:00Z,x
d4,carl,,50,usd,open,2025-01-05,,2025-02-01T10:00:00Z,x
d5,nobody,,50,USD,open,2025-01-05,,2025-02-01T10:00:00Z,x
d6,carl,,75.25,GBP,won,2025-01-05,2025-01-20,2025-02-01T10:00:00Z,\"two
lines\"
d7,carl,,10,USD,open,2025-01-05
d8,carl,,10,USD,won,2025-01-05,2025-01-06,2025-02-01T10:00:00Z,x
";

// The proto3 JSON grpcurl takes: JSON or proto field names, enum names or
// numbers.
const ACTIVITY: &str = r#"{"interaction": {"interactionId": "i1", "repId": "anna", "channel": "CHANNEL_CALL", "occurredAt": "2025-01-10T09:00:00Z", "updatedAt": "2025-01-10T09:00:00Z"}}
{"interaction": {"interaction_id": "i2", "rep_id": "carl", "channel": 2, "occurred_at": "2025-01-10T09:00:00Z", "updated_at": "2025-01-10T09:00:00Z", "durationSeconds": 60}}
{"interaction": {"interactionId": "i3", "repId": "anna", "channel": "CHANNEL_FAX", "occurredAt": "2025-01-10T09:00:00Z", "updatedAt": "2025-01-10T09:00:00Z"}}
not json

{"deletion": {"recordType": "RECORD_TYPE_DEAL", "recordId": "d4", "updatedAt": "2025-03-01T00:00:00Z"}}
{"interaction": {"interactionId": "i4", "repId": "anna", "channel": "CHANNEL_EMAIL", "occurredAt": "2025-01-10T09:00:00Z"}}
{"interaction": {"interactionId": "i5", "repId": "bob", "channel": "CHANNEL_MEETING", "occurredAt": "2025-01-10T09:00:00Z", "updatedAt": "2025-01-10T09:00:00Z"}}
{"customer": {"customerId": "c1", "repId": "anna", "leadAt": "2024-12-01T00:00:00Z", "convertedAt": "2025-02-01T09:00:00Z", "updatedAt": "2025-02-01T09:00:00Z"}}
"#;

#[tokio::test]
async fn an_import_with_bad_lines_sends_the_good_ones_and_rejects_the_rest_with_file_line_and_reason()
 {
    let app = TestApp::spawn().await;
    let key = app.key(Role::Ingest, None).await;
    app.keys_refreshed().await;
    let dir = Workdir::new();
    let activity = dir.file("activity.ndjson", ACTIVITY);
    let deals = dir.file("deals-2025.csv", DEALS);
    let reps = dir.file("reps.csv", REPS);
    let teams = dir.file("teams.csv", TEAMS);
    let reject_file = dir.0.join("rejects.ndjson");
    let reject_path = reject_file.to_string_lossy().into_owned();
    // Activity first on the command line: the directory still goes first.
    // Batches of two on one stream: rejections come mid-stream, and the
    // batches after a rejected one must still land.
    let files = [
        activity.as_path(),
        deals.as_path(),
        reps.as_path(),
        teams.as_path(),
    ];
    let args = [
        "--time-zone",
        "Europe/Berlin",
        "--rejects",
        &reject_path,
        "--batch-size",
        "2",
        "--concurrency",
        "1",
    ];
    // The NDJSON file is read first: d4's deletion arrives before d4, is
    // kept as a tombstone, and the older d4 is stale.
    let first = import(&app, &key, &args, &files).await;
    let (stdout, stderr) = (text(&first.stdout), text(&first.stderr));
    assert_eq!(first.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("import: 8 records from 4 files in ")
            && stdout
                .contains("inserted 6, updated 0, unchanged 0, stale 1, deleted 1, rejected 11"),
        "{stdout}"
    );
    assert!(
        stdout.contains("directory: 2 team rows and 3 rep rows upserted"),
        "{stdout}"
    );
    assert!(stderr.contains("ignoring column Pipeline"), "{stderr}");
    assert!(stderr.contains("11 records rejected; see"), "{stderr}");

    let found = rejects(&reject_file);
    let lines: BTreeSet<(String, u64)> = found.iter().map(|(f, l, _)| (f.clone(), *l)).collect();
    let expected: BTreeSet<(String, u64)> = [
        ("teams.csv", 4),
        ("reps.csv", 4),
        ("reps.csv", 6),
        ("deals-2025.csv", 3),
        ("deals-2025.csv", 4),
        ("deals-2025.csv", 6),
        ("deals-2025.csv", 9),
        ("activity.ndjson", 3),
        ("activity.ndjson", 4),
        ("activity.ndjson", 7),
        ("activity.ndjson", 8),
    ]
    .into_iter()
    .map(|(f, l)| (f.to_owned(), l))
    .collect();
    assert_eq!(lines, expected, "{found:#?}");
    let reason = |file: &str, line: u64| {
        found
            .iter()
            .find(|(f, l, _)| f == file && *l == line)
            .map(|(_, _, r)| r.clone())
            .unwrap_or_default()
    };
    // Read locally ...
    assert!(reason("reps.csv", 6).starts_with("active: \"maybe\" is not one of"));
    assert!(reason("deals-2025.csv", 3).contains("no thousands separators"));
    assert_eq!(
        reason("deals-2025.csv", 9),
        "the row has 7 fields, the header 10"
    );
    assert!(reason("activity.ndjson", 3).contains("unknown variant `CHANNEL_FAX`"));
    assert!(reason("activity.ndjson", 4).starts_with("not an ActivityRecord in proto3 JSON"));
    // ... and judged by the service, each record of its batch on its own.
    assert!(
        reason("teams.csv", 4).contains("no-such-team"),
        "{found:#?}"
    );
    assert!(
        reason("reps.csv", 4).starts_with("invalid email"),
        "{found:#?}"
    );
    assert!(
        reason("deals-2025.csv", 4).starts_with("deal.closed_at: must not be before created_at")
    );
    assert_eq!(
        reason("deals-2025.csv", 6),
        "deal.rep_id: rep 'nobody' does not exist"
    );
    assert_eq!(
        reason("activity.ndjson", 7),
        "interaction.updated_at: is required"
    );
    assert_eq!(
        reason("activity.ndjson", 8),
        "interaction.rep_id: rep 'bob' does not exist"
    );

    // What landed: the good rows, exactly as written (local times in
    // Berlin, amounts to the nano, the deletion as a tombstone).
    let deals: Vec<(String, bool, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT deal_id, deleted, amount::text || ' ' || currency, \
         to_char(closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM deals ORDER BY deal_id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let expect = |id: &str, deleted: bool, amount: Option<&str>, closed: Option<&str>| {
        (
            id.to_owned(),
            deleted,
            amount.map(str::to_owned),
            closed.map(str::to_owned),
        )
    };
    assert_eq!(
        deals,
        [
            expect(
                "d1",
                false,
                Some("1200.500000000 EUR"),
                Some("2025-02-01 09:00")
            ),
            expect("d4", true, None, None),
            expect(
                "d6",
                false,
                Some("75.250000000 GBP"),
                Some("2025-01-19 23:00")
            ),
            expect(
                "d8",
                false,
                Some("10.000000000 USD"),
                Some("2025-01-05 23:00")
            ),
        ]
    );
    let interactions: Vec<String> =
        sqlx::query_scalar("SELECT interaction_id FROM interactions ORDER BY 1")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(interactions, ["i1", "i2"]);
    assert_eq!(app.count("customers").await, 1);

    // The directory: parents first whatever the file order, and a rep's
    // rows as its history.
    let mut directory = app.directory.clone();
    let north = directory
        .get_team(pb::GetTeamRequest {
            team_id: "emea-north".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    assert_eq!(north.parent_team_id, "emea");
    let anna = directory
        .get_rep(pb::GetRepRequest {
            rep_id: "anna".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rep
        .unwrap();
    assert_eq!(anna.team_id, "emea-north");
    let history: Vec<(String, Option<i64>)> = anna
        .memberships
        .iter()
        .map(|m| (m.team_id.clone(), m.effective_from.map(|t| t.seconds)))
        .collect();
    assert!(
        history.contains(&(
            "emea-north".to_owned(),
            Some(at("2025-02-28T23:00:00Z").timestamp())
        )),
        "{history:?}"
    );
    assert!(
        history.iter().any(|(team, _)| team == "emea"),
        "{history:?}"
    );

    // Running it again (default batches and streams) changes nothing: the
    // records sent count unchanged (d4's older version is stale after its
    // deletion), the same lines are rejected.
    let again = import(&app, &key, &args[..4], &files).await;
    let stdout = text(&again.stdout);
    assert_eq!(again.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("inserted 0, updated 0, unchanged 7, stale 1, deleted 0, rejected 11"),
        "{stdout}"
    );
    assert_eq!(rejects(&reject_file), found);
    assert_eq!(app.count("interactions").await, 2);
}

#[tokio::test]
async fn an_import_checks_every_file_before_sending_anything() {
    let app = TestApp::spawn().await;
    let dir = Workdir::new();
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let good = dir.file(
        "interactions.csv",
        "interaction_id,rep_id,channel,occurred_at,updated_at\n\
         i1,anna,call,2025-01-10 09:00,2025-01-10 09:00\n",
    );
    let unnamed = dir.file("export.csv", "deal_id\n");
    let no_version = dir.file(
        "deals.csv",
        "deal_id,rep_id,amount,currency,stage,created_at\n",
    );
    let wrong_kind = dir.file("notes.txt", "hello\n");

    for (bad, says) in [
        (&unnamed, "a CSV file is named after what it holds"),
        (&no_version, "the header lacks column updated_at"),
        (&wrong_kind, "not an import file"),
    ] {
        let output = import(&app, &app.admin_key, &[], &[good.as_path(), bad.as_path()]).await;
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    assert_eq!(app.count("interactions").await, 0);

    // The good file alone goes in.
    let output = import(&app, &app.admin_key, &[], &[good.as_path()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("inserted 1, updated 0"));
    assert_eq!(app.count("interactions").await, 1);
}

#[tokio::test]
async fn an_import_with_a_read_key_stops_at_the_first_refusal_and_writes_nothing() {
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let read_key = app.key(Role::Read, None).await;
    app.keys_refreshed().await;
    let dir = Workdir::new();
    let file = dir.file(
        "activity.jsonl",
        r#"{"interaction": {"interactionId": "i1", "repId": "anna", "channel": "CHANNEL_CALL", "occurredAt": "2025-01-10T09:00:00Z", "updatedAt": "2025-01-10T09:00:00Z"}}
"#,
    );
    let output = import(&app, &read_key, &[], &[file.as_path()]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the service refused the import: PermissionDenied"),
        "{stderr}"
    );
    assert_eq!(app.count("interactions").await, 0);
}

/// The files docs/IMPORT.md shows, by name: its NDJSON example and the
/// CSV example of every kind (the CRM examples after them are not files
/// of this organisation).
fn documented_files() -> Vec<(String, String)> {
    let doc = include_str!("../../docs/IMPORT.md");
    let mut files = Vec::new();
    let mut heading = String::new();
    let mut block: Option<(String, String)> = None;
    for line in doc.lines() {
        if line.starts_with("## From a CRM") {
            break;
        }
        if let Some((name, mut text)) = block.take() {
            if line == "```" {
                files.push((name, text));
            } else {
                text.push_str(line);
                text.push('\n');
                block = Some((name, text));
            }
            continue;
        }
        if let Some(title) = line.strip_prefix("### ") {
            heading = title.to_owned();
        } else if line == "```json" {
            block = Some(("examples.ndjson".to_owned(), String::new()));
        } else if line == "```csv" && heading.ends_with(".csv") {
            block = Some((heading.clone(), String::new()));
        }
    }
    files
}

#[tokio::test]
async fn the_examples_in_the_import_docs_import_cleanly_and_agree() {
    let app = TestApp::spawn().await;
    let dir = Workdir::new();
    let files: Vec<PathBuf> = documented_files()
        .iter()
        .map(|(name, text)| dir.file(name, text))
        .collect();
    let names: BTreeSet<String> = documented_files().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 9, "{names:?}");
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let output = import(&app, &app.admin_key, &[], &paths).await;
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    // Each record is shown twice, as NDJSON and as CSV: the same record,
    // so the second copy is unchanged.
    assert!(
        stdout.contains("inserted 5, updated 0, unchanged 6, stale 0, deleted 1, rejected 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 team rows and 2 rep rows upserted"),
        "{stdout}"
    );
}

#[tokio::test]
async fn an_interrupted_import_run_again_finishes_the_job_without_counting_twice() {
    const RECORDS: usize = 30_000;
    let app = TestApp::spawn().await;
    app.upsert_team("t1", "Team 1", "").await.unwrap();
    app.rep_in("anna", "t1").await;
    let dir = Workdir::new();
    let mut lines = String::new();
    for i in 0..RECORDS {
        lines.push_str(&format!(
            r#"{{"interaction": {{"interactionId": "i{i:05}", "repId": "anna", "channel": "CHANNEL_CALL", "occurredAt": "2025-01-10T09:00:00Z", "updatedAt": "2025-01-10T09:00:00Z"}}}}"#
        ));
        lines.push('\n');
    }
    let file = dir.file("calls.ndjson", &lines);
    let rejects = dir.0.join("rejects.ndjson");
    let rejects = rejects.to_string_lossy().into_owned();
    let args = [
        "--rejects",
        rejects.as_str(),
        "--batch-size",
        "100",
        "--concurrency",
        "1",
    ];

    // Interrupt it (Ctrl-C) once some of it is stored.
    let child = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
        .args(["import", "--target", &app.endpoint, "--key", &app.admin_key])
        .args(args)
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    while app.count("interactions").await == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let first = child.wait_with_output().await.unwrap();
    let first_out = text(&first.stdout);
    let count = |summary: &str, name: &str| -> usize {
        summary
            .split([',', ':'])
            .find_map(|part| part.trim().strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {summary}"))
    };
    let first_inserted = count(&first_out, "inserted");
    match first.status.code() {
        // Interrupted: it says so, and counted only part.
        Some(130) => {
            assert!(text(&first.stderr).contains("run the same import again"));
            assert!(first_inserted < RECORDS, "{first_out}");
        }
        // A fast machine may finish before the signal lands.
        Some(0) => assert_eq!(first_inserted, RECORDS, "{first_out}"),
        other => panic!("exit {other:?}: {first_out}\n{}", text(&first.stderr)),
    }

    // Again: everything lands once; what the first run committed is
    // unchanged (at least what it counted; a batch in flight at the signal
    // may have committed without being counted).
    let again = import(&app, &app.admin_key, &args, &[file.as_path()]).await;
    let again_out = text(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{again_out}");
    let (inserted, unchanged) = (
        count(&again_out, "inserted"),
        count(&again_out, "unchanged"),
    );
    assert_eq!(inserted + unchanged, RECORDS, "{again_out}");
    assert!(unchanged >= first_inserted, "{first_out}\n{again_out}");
    assert_eq!(app.count("interactions").await, RECORDS as i64);
}
