//! `contrail.toml` and `.env`: flag > environment > .env > contrail.toml > default, and an
//! unknown key stops the start with the key and the file named.

use std::path::Path;
use std::process::{Command, Output};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `contrail demo` for one second in `dir` with `args`; returns its output.
fn demo(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contrail"));
    cmd.args(args)
        .arg("--sql-dir")
        .arg(root.join("sql"))
        .arg("--model")
        .arg(root.join("models/flight_anomaly_detector.json"))
        .arg("--web-dir")
        .arg(root.join("web"))
        .current_dir(dir)
        .env_remove("CONTRAIL_HTTP_BIND")
        .env_remove("CONTRAIL_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn dashboard_port(out: &Output) -> u16 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stopping: --duration reached"), "{stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("dashboard: http://127.0.0.1:"))
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .expect("dashboard address")
}

#[test]
fn files_fill_what_flags_and_environment_leave_unset() {
    let dir = tempfile::tempdir().unwrap();
    let (from_toml, from_dotenv, from_env, from_flag) =
        (free_port(), free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("contrail.toml"),
        format!(
            "grpc-bind = \"127.0.0.1:0\"\nno-archive = true\n\n[demo]\nduration = 1\naircraft = 5\nhttp_bind = \"127.0.0.1:{from_toml}\"\n"
        ),
    )
    .unwrap();
    // contrail.toml alone (found in the working directory).
    assert_eq!(dashboard_port(&demo(dir.path(), &["demo"], &[])), from_toml);
    // .env beats contrail.toml.
    std::fs::write(
        dir.path().join(".env"),
        format!("# local\nCONTRAIL_HTTP_BIND=127.0.0.1:{from_dotenv}\n"),
    )
    .unwrap();
    assert_eq!(
        dashboard_port(&demo(dir.path(), &["demo"], &[])),
        from_dotenv
    );
    // The environment beats .env; a flag beats everything.
    let env = [("CONTRAIL_HTTP_BIND", format!("127.0.0.1:{from_env}"))];
    assert_eq!(dashboard_port(&demo(dir.path(), &["demo"], &env)), from_env);
    let flag = format!("127.0.0.1:{from_flag}");
    assert_eq!(
        dashboard_port(&demo(dir.path(), &["demo", "--http-bind", &flag], &env)),
        from_flag
    );
}

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.toml");
    std::fs::write(
        &file,
        "[serve]\ngrpc-bind = \"127.0.0.1:0\"\nlive-histroy = \"1h\"\n",
    )
    .unwrap();
    let out = demo(
        dir.path(),
        &["--config", file.to_str().unwrap(), "serve"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("settings.toml") && stderr.contains("live-histroy"),
        "{stderr}"
    );
    // A missing --config file is named too.
    let out = demo(dir.path(), &["--config", "nope.toml", "demo"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config nope.toml"));
}

#[test]
fn a_start_time_past_the_event_lead_is_refused_with_both_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ahead = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let base = [
        "demo",
        "--start-time",
        &ahead,
        "--no-archive",
        "--grpc-bind",
        "127.0.0.1:0",
        "--http-bind",
        "127.0.0.1:0",
        "--duration",
        "1",
        "--aircraft",
        "5",
    ];
    let out = demo(dir.path(), &base, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--start-time") && stderr.contains("--max-event-lead"),
        "{stderr}"
    );
    // With a lead that covers it, the demo runs.
    let mut longer = base.to_vec();
    longer.extend(["--max-event-lead", "4d"]);
    let out = demo(dir.path(), &longer, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
