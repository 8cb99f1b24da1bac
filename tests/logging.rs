//! Logs: `--log-format json` writes one JSON object per line, `--log-dir` sends them to a
//! daily file instead of stderr, and secrets given on the command line never appear.

use std::process::Command;

#[test]
fn json_logs_go_to_the_log_dir_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let secret = "s3cr3t-t0k3n-do-not-log";
    let out = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .args([
            "demo",
            "--duration",
            "2",
            "--no-archive",
            "--aircraft",
            "20",
        ])
        .args(["--grpc-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--auth-token", secret])
        .args(["--log", "debug,rdkafka=warn", "--log-format", "json"])
        .arg("--log-dir")
        .arg(&logs)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "logs went to stderr: {stderr}");

    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(name, format!("contrail.log.{today}"));
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{text}");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string() && l["target"].is_string());
    }
    assert!(lines.iter().any(|l| l["level"] == "DEBUG"));
    assert!(!text.contains(secret), "the auth token was logged");
}

#[test]
fn a_bad_log_format_names_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .args(["demo", "--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--log-format"), "{stderr}");
}
