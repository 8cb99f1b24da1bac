//! `docker-compose.yml` and the `Dockerfile` cannot drift from the binary: every Contrail
//! service runs a real subcommand, every `CONTRAIL_*` variable they set is one that
//! subcommand reads, the Kafka image is the official one in KRaft mode at the version the
//! tests run (scripts/kafka-dist/pom.xml), and the published ports are loopback only. Where
//! `docker compose` exists, `docker compose config` must accept the file too.
//!
//! Needs `CONTRAIL_PYTHON` with PyYAML (scripts/test provides it) to read the YAML.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, fails the test unless it succeeds, and returns its standard output.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `contrail <command> --help`.
fn help_of(command: &[&str]) -> String {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_contrail"))
            .args(command)
            .arg("--help"),
    )
}

/// The `CONTRAIL_*` variables a help text lists.
fn variables_in(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "needs CONTRAIL_PYTHON with PyYAML: run scripts/test"]
fn compose_file_and_dockerfile_match_the_binary() {
    let python = std::env::var("CONTRAIL_PYTHON").expect("CONTRAIL_PYTHON (scripts/test sets it)");
    let json = run_ok(
        Command::new(python)
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            ])
            .arg(root().join("docker-compose.yml")),
    );
    let compose: Value = serde_json::from_str(&json).unwrap();
    let services = compose["services"].as_object().unwrap();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["ingest", "kafka", "process", "serve", "topics"])
    );

    // The official image, KRaft, the version the tests use.
    let pom = std::fs::read_to_string(root().join("scripts/kafka-dist/pom.xml")).unwrap();
    let version = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap();
    let kafka = &services["kafka"];
    assert_eq!(kafka["image"], format!("apache/kafka:{version}"));
    let env = &kafka["environment"];
    assert_eq!(env["KAFKA_PROCESS_ROLES"], "broker,controller");
    assert!(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].is_string());
    assert!(env.get("KAFKA_ZOOKEEPER_CONNECT").is_none());

    for (name, service) in services.iter().filter(|(n, _)| *n != "kafka") {
        assert_eq!(service["build"], ".", "{name} is built from the Dockerfile");
        let command: Vec<&str> = service["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: command as a list"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // The subcommand is the words before the first flag.
        let sub: Vec<&str> = command
            .iter()
            .copied()
            .take_while(|w| !w.starts_with('-'))
            .collect();
        let help = help_of(&sub);
        let known = variables_in(&help);
        let set: Vec<&String> = service["environment"].as_object().unwrap().keys().collect();
        for var in set.iter().filter(|v| v.starts_with("CONTRAIL_")) {
            assert!(
                known.contains(*var),
                "{name}: contrail {sub:?} does not read {var}"
            );
        }
        // Every flag in the command is one the subcommand has.
        for flag in command.iter().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{name}: {flag}"
            );
        }
        for port in service["ports"].as_array().into_iter().flatten() {
            assert!(
                port.as_str().unwrap().starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond loopback"
            );
        }
    }

    // The Dockerfile's ENV names variables the servers read.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let serve = variables_in(&help_of(&["serve"]));
    for line in dockerfile.lines().filter(|l| l.starts_with("ENV ")) {
        let var = line[4..].split('=').next().unwrap();
        assert!(
            serve.contains(var),
            "Dockerfile sets {var}, which serve does not read"
        );
    }

    // The real validator, where it is installed (not on the CI machine: no Docker there).
    let docker = Command::new("docker").args(["compose", "version"]).output();
    if docker.is_ok_and(|o| o.status.success()) {
        run_ok(
            Command::new("docker")
                .args(["compose", "-f"])
                .arg(root().join("docker-compose.yml"))
                .args(["config", "--quiet"]),
        );
    } else {
        eprintln!("docker compose is not installed here: `docker compose config` not run");
    }
}
