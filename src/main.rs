//! The `contrail` binary: parses the command line and hands over to [`contrail::app`].

use std::io::IsTerminal;

use clap::Parser;
use contrail::config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// mimalloc instead of glibc malloc: see Cargo.toml and benches/REPORT.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// librdkafka allocates with the C allocator. glibc gives every thread that allocates its
/// own arena (up to 8 per core) and keeps what was freed in each. Measured over 2M records
/// (`scripts/bench`'s drain, A/B in one build, two runs each): default arenas 112k-115k
/// records/s, 321-323 MiB peak RSS; two arenas 117k-119k, 302-316 MiB; one arena
/// 100k-107k, 285-305 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn few_c_allocator_arenas() {
    // SAFETY: mallopt is called before any other thread exists (the first line of main).
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn few_c_allocator_arenas() {}

fn main() -> std::process::ExitCode {
    few_c_allocator_arenas();
    // .env and contrail.toml fill unset CONTRAIL_* variables before clap reads them; this
    // runs before any other thread exists.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match contrail::config_file::settings(&args) {
        // SAFETY: single-threaded here: the runtime is built below.
        Ok(vars) => vars
            .into_iter()
            .for_each(|(k, v)| unsafe { std::env::set_var(k, v) }),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    let cli = contrail::config::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("error: invalid value '{}' for '--log': {e}", cli.log);
        std::process::exit(2);
    });
    // Logs go to stderr, or to daily files in --log-dir through a background writer (its
    // guard flushes what is queued when main returns).
    let (writer, _guard) = match &cli.log_dir {
        Some(dir) => {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("error: --log-dir {}: {e}", dir.display());
                std::process::exit(2);
            }
            let files = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("contrail.log")
                .max_log_files(usize::try_from(cli.log_max_files).unwrap_or(usize::MAX))
                .build(dir)
                .unwrap_or_else(|e| {
                    eprintln!("error: --log-dir {}: {e}", dir.display());
                    std::process::exit(2);
                });
            let (w, guard) = tracing_appender::non_blocking(files);
            (
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(w),
                Some(guard),
            )
        }
        None => (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
            None,
        ),
    };
    let ansi = cli.log_dir.is_none() && std::io::stderr().is_terminal();
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = match cli.log_format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(contrail::app::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // Everything the command needed is done; a librdkafka call given up on (the
    // transactional watchdog in bus/kafka.rs) may still hold a blocking thread, which must
    // not keep the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(30));
    code
}
