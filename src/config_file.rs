//! Settings from files: `.env` and `contrail.toml` (or `--config FILE` / `CONTRAIL_CONFIG`).
//!
//! Both only fill the environment variables behind the flags (`CONTRAIL_*`), before the
//! command line is parsed, and only where the variable is not set already, so the order of
//! precedence is: flag > environment > `.env` > `contrail.toml` > default.
//!
//! `contrail.toml` keys are flag names without the dashes' prefix (`kafka-bootstrap`,
//! `grpc-bind`; underscores work too). Top-level keys apply to every command that has the
//! flag; a table named after a command (`[process]`, `[serve]`, `[topics-create]`) applies
//! to that command only and wins over top-level keys. A key no command knows, a key a
//! command table's command does not have, or an unknown table is an error naming it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;

use crate::config::Cli;

/// Long flag name -> environment variable, per command (`""` = global flags).
fn flags() -> BTreeMap<String, HashMap<String, String>> {
    fn collect(cmd: &clap::Command) -> HashMap<String, String> {
        cmd.get_arguments()
            .filter_map(|a| {
                let env = a.get_env()?.to_str()?.to_string();
                Some((a.get_long()?.to_string(), env))
            })
            .collect()
    }
    let cli = Cli::command();
    let mut out = BTreeMap::new();
    out.insert(String::new(), collect(&cli));
    for sub in cli.get_subcommands() {
        if sub.has_subcommands() {
            for nested in sub.get_subcommands() {
                out.insert(
                    format!("{}-{}", sub.get_name(), nested.get_name()),
                    collect(nested),
                );
            }
        } else {
            out.insert(sub.get_name().to_string(), collect(sub));
        }
    }
    out
}

/// The command named on the command line (`topics create` -> `topics-create`), if any.
fn command_of(args: &[OsString], known: &BTreeMap<String, HashMap<String, String>>) -> String {
    let words: Vec<&str> = args.iter().skip(1).filter_map(|a| a.to_str()).collect();
    for (i, w) in words.iter().enumerate() {
        if w.starts_with('-') {
            continue;
        }
        if let Some(next) = words.get(i + 1) {
            let nested = format!("{w}-{next}");
            if known.contains_key(&nested) {
                return nested;
            }
        }
        if known.contains_key(*w) {
            return (*w).to_string();
        }
    }
    String::new()
}

fn value_text(key: &str, v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "`{key}`: expected a string, number or boolean, got {}",
            other.type_str()
        )),
    }
}

/// The environment assignments `text` (a `contrail.toml`) makes for `command`, checked:
/// unknown keys and tables are errors naming them.
pub fn toml_settings(text: &str, command: &str) -> Result<Vec<(String, String)>, String> {
    let known = flags();
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let norm = |k: &str| k.replace('_', "-");
    let env_of = |cmd: &str, key: &str| {
        known
            .get(cmd)
            .and_then(|f| f.get(key))
            .or_else(|| known[""].get(key))
            .cloned()
    };
    let mut top = Vec::new();
    let mut own = Vec::new();
    for (k, v) in &table {
        if let toml::Value::Table(section) = v {
            let name = norm(k);
            if !known.contains_key(&name) || name.is_empty() {
                return Err(format!(
                    "unknown table `[{k}]` (commands: {})",
                    known
                        .keys()
                        .filter(|c| !c.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for (sk, sv) in section {
                let key = norm(sk);
                let env = env_of(&name, &key).ok_or_else(|| {
                    format!("unknown key `{sk}` in `[{k}]`: `{name}` has no --{key}")
                })?;
                let text = value_text(sk, sv)?;
                if name == command {
                    own.push((env, text));
                }
            }
        } else {
            let key = norm(k);
            if !known.values().any(|f| f.contains_key(&key)) {
                return Err(format!("unknown key `{k}`: no command has --{key}"));
            }
            let text = value_text(k, v)?;
            if let Some(env) = env_of(command, &key)
                && (known[""].contains_key(&key)
                    || known.get(command).is_some_and(|f| f.contains_key(&key)))
            {
                top.push((env, text));
            }
        }
    }
    // The command's own table wins: later assignments of the same variable are dropped.
    let mut seen = std::collections::HashSet::new();
    Ok(own
        .into_iter()
        .chain(top)
        .filter(|(env, _)| seen.insert(env.clone()))
        .collect())
}

/// `KEY=VALUE` lines of a `.env` file (blank lines, `#` comments, `export ` and matching
/// quotes allowed). A `CONTRAIL_*` name that no flag has is an error (a typo would
/// otherwise be silently ignored).
pub fn dotenv_settings(text: &str) -> Result<Vec<(String, String)>, String> {
    let known: Vec<String> = flags()
        .into_values()
        .flat_map(|f| f.into_values())
        .collect();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE", n + 1))?;
        let (k, v) = (k.trim(), v.trim());
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
            .unwrap_or(v);
        if k.starts_with("CONTRAIL_") && !known.iter().any(|e| e == k) {
            return Err(format!("line {}: unknown variable `{k}`", n + 1));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Where the settings file is: `--config FILE` on the command line, else
/// `CONTRAIL_CONFIG`, else `contrail.toml` in the working directory when it exists.
fn config_path(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter().filter_map(|a| a.to_str());
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some((PathBuf::from(p), true));
        }
    }
    if let Some(p) = std::env::var_os("CONTRAIL_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    let default = Path::new("contrail.toml");
    default.exists().then(|| (default.to_path_buf(), false))
}

/// Reads `.env` and the settings file and returns the variables to set (those not set in
/// the environment already), in order. Errors name the file and the key.
pub fn settings(args: &[OsString]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let dotenv = Path::new(".env");
    if dotenv.exists() {
        let text = std::fs::read_to_string(dotenv).map_err(|e| format!(".env: {e}"))?;
        out.extend(dotenv_settings(&text).map_err(|e| format!(".env: {e}"))?);
    }
    if let Some((path, _)) = config_path(args) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        let command = command_of(args, &flags());
        out.extend(toml_settings(&text, &command).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let mut seen = std::collections::HashSet::new();
    Ok(out
        .into_iter()
        .filter(|(k, _)| std::env::var_os(k).is_none() && seen.insert(k.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tables_win_over_top_level_keys() {
        let text = "grpc-bind = \"127.0.0.1:1\"\nlog = \"debug\"\n[serve]\ngrpc_bind = \"127.0.0.1:2\"\n[process]\nbatch-max-records = 5\n";
        let serve = toml_settings(text, "serve").unwrap();
        assert!(serve.contains(&("CONTRAIL_GRPC_BIND".into(), "127.0.0.1:2".into())));
        assert!(serve.contains(&("CONTRAIL_LOG".into(), "debug".into())));
        assert_eq!(serve.len(), 2);
        // `process` has no --grpc-bind: the top-level key does not apply to it.
        let process = toml_settings(text, "process").unwrap();
        assert_eq!(
            process,
            [
                ("CONTRAIL_BATCH_MAX_RECORDS".to_string(), "5".to_string()),
                ("CONTRAIL_LOG".to_string(), "debug".to_string())
            ]
        );
    }

    #[test]
    fn unknown_keys_and_tables_are_named() {
        let e = toml_settings("kafka-bootstrapp = \"x\"", "demo").unwrap_err();
        assert!(e.contains("kafka-bootstrapp"), "{e}");
        let e = toml_settings("[serve]\nbatch-max-records = 5", "serve").unwrap_err();
        assert!(
            e.contains("batch-max-records") && e.contains("[serve]"),
            "{e}"
        );
        let e = toml_settings("[servr]\nlog = \"x\"", "serve").unwrap_err();
        assert!(e.contains("[servr]"), "{e}");
        let e = toml_settings("aircraft = [1, 2]", "demo").unwrap_err();
        assert!(e.contains("aircraft"), "{e}");
    }

    #[test]
    fn dotenv_lines_parse_and_typos_are_named() {
        let got = dotenv_settings(
            "# comment\nexport CONTRAIL_AIRCRAFT=12\nOPENSKY_CLIENT_ID='me'\n\nCONTRAIL_LOG=\"warn\"\n",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("CONTRAIL_AIRCRAFT".to_string(), "12".to_string()),
                ("OPENSKY_CLIENT_ID".to_string(), "me".to_string()),
                ("CONTRAIL_LOG".to_string(), "warn".to_string()),
            ]
        );
        let e = dotenv_settings("CONTRAIL_AIRCRAFTS=3").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("CONTRAIL_AIRCRAFTS"),
            "{e}"
        );
    }

    #[test]
    fn the_command_is_found_after_global_flags() {
        let known = flags();
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            command_of(&args(&["contrail", "--log", "info", "serve"]), &known),
            "serve"
        );
        assert_eq!(
            command_of(
                &args(&["contrail", "topics", "create", "--partitions", "3"]),
                &known
            ),
            "topics-create"
        );
    }

    #[test]
    fn the_example_file_only_has_known_keys() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("contrail.example.toml"),
        )
        .unwrap();
        for command in flags().keys() {
            toml_settings(&text, command).unwrap_or_else(|e| panic!("{command}: {e}"));
        }
        // It sets something for each service it documents.
        for command in ["ingest", "process", "serve", "demo"] {
            assert!(
                !toml_settings(&text, command).unwrap().is_empty(),
                "{command}"
            );
        }
    }
}
