//! The API's shape is guarded: `buf lint` (buf.yaml: STANDARD, the
//! vendored google.rpc excepted) and `buf breaking` against the last
//! released protos in api/released/ (FILE rules: wire, JSON and generated
//! code stay compatible). `cargo xtask test` provides buf as `BUF`. See
//! docs/API.md for how the API is versioned.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs buf in `dir`: success and what it said.
async fn buf(dir: &Path, args: &[&str]) -> (bool, String) {
    let bin = std::env::var("BUF").unwrap_or_else(|_| "buf".to_owned());
    let output = tokio::process::Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run buf ({bin}): {e}; use `cargo xtask test`"));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn the_protos_pass_buf_lint_and_break_nothing_released() {
    let (ok, said) = buf(&root(), &["lint"]).await;
    assert!(ok, "buf lint:\n{said}");
    let (ok, said) = buf(&root(), &["breaking", "proto", "--against", "api/released"]).await;
    assert!(ok, "buf breaking against api/released:\n{said}");
}

#[tokio::test]
async fn a_deleted_field_or_a_renamed_rpc_is_a_breaking_change() {
    let copy = std::env::temp_dir().join(format!("kpi-buf-{}", std::process::id()));
    std::fs::remove_dir_all(&copy).ok();
    for dir in ["proto", "api"] {
        copy_dir(&root().join(dir), &copy.join(dir));
    }
    std::fs::copy(root().join("buf.yaml"), copy.join("buf.yaml")).unwrap();
    let kpi = copy.join("proto/kpi/v1/kpi.proto");
    let original = std::fs::read_to_string(&kpi).unwrap();
    for (change, from, to, expected) in [
        (
            "a deleted field",
            "  int64 sample_size = 7;",
            "  reserved 7;",
            "sample_size",
        ),
        (
            "a renamed RPC",
            "rpc GetScorecard(",
            "rpc FetchScorecard(",
            "GetScorecard",
        ),
    ] {
        assert!(
            original.contains(from),
            "{change}: the proto changed; update this test"
        );
        std::fs::write(&kpi, original.replace(from, to)).unwrap();
        let (ok, said) = buf(&copy, &["breaking", "proto", "--against", "api/released"]).await;
        assert!(
            !ok && said.contains(expected),
            "{change} passed buf breaking:\n{said}"
        );
    }
    std::fs::remove_dir_all(&copy).ok();
}
