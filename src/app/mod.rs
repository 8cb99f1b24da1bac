//! Wiring of the stages for each command, and their ordered shutdown: stop the source,
//! let the pipeline drain and commit, close the archive, then report.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod health;
mod offline;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::bus::kafka::{
    Deletion, KafkaBatchConsumer, KafkaChangelogReader, KafkaConsumerConfig, KafkaPublisher,
    TopicSpec, create_topics, delete_topics, partition_count,
};
use crate::bus::memory::MemoryBus;
use crate::bus::{BatchConsumer, BatchLimits, Publisher};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{
    Cli, Command, DashboardArgs, DemoArgs, GrpcArgs, IngestArgs, PipelineArgs, ProcessArgs,
    ServeArgs, SourceArgs, SourceKind, TopicArgs, TopicsCommand, TopicsCreateArgs,
    TopicsDeleteArgs,
};
use crate::config::{OpenSkyArgs, RecordArgs, SimulatorArgs};
use crate::dashboard::snapshot::Settings;
use crate::dead_letter::DeadLetter;
use crate::http::HttpServer;
use crate::ingest::opensky::{ClientConfig, Credentials, OpenSkyClient, OpenSkySource};
use crate::ingest::replay::ReplaySource;
use crate::ingest::simulator::SimulatorConfig;
use crate::ingest::{IngestStats, IngestTopics, SimulatorSource, Source, Speed, run_ingest};
use crate::pipeline::{OutputTopics, ProcessConfig, ProcessStats, Processor, run_process};
use crate::query::feed::{FeedTopic, feed_from_bus, spawn_kafka_feed};
use crate::query::store::{Feed, LiveStore, StoreLimits};
use crate::query::{GrpcServer, QueryLimits, QueryService};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo(args).await,
        Command::Ingest(args) => ingest(args).await,
        Command::Process(args) => process(args).await,
        Command::Simulate(args) => offline::simulate(args).await,
        Command::Features(args) => offline::features(args).await,
        Command::Train(args) => offline::train(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Record(args) => record(args).await,
        Command::Topics {
            action: TopicsCommand::Create(args),
        } => topics_create(args).await,
        Command::Topics {
            action: TopicsCommand::Delete(args),
        } => topics_delete(args).await,
    }
}

fn build_source(args: &SourceArgs) -> anyhow::Result<Box<dyn Source>> {
    match args.source {
        SourceKind::Simulator => Ok(Box::new(simulator_source(
            &args.simulator,
            args.simulator.speed,
        )?)),
        SourceKind::Opensky => Ok(Box::new(opensky_source(&args.opensky)?)),
        SourceKind::Replay => {
            let path = args
                .replay_file
                .as_deref()
                .context("--source replay needs --replay-file")?;
            Ok(Box::new(ReplaySource::open(path, args.simulator.speed)?))
        }
    }
}

fn opensky_source(o: &OpenSkyArgs) -> anyhow::Result<OpenSkySource> {
    let poll = o.poll_config().map_err(anyhow::Error::msg)?;
    let credentials = Credentials::load(o.opensky_credentials.as_deref())?;
    let client = OpenSkyClient::new(ClientConfig {
        api_url: o.opensky_api_url.clone(),
        auth_url: o.opensky_auth_url.clone(),
        credentials,
        bbox: o.bbox,
        timeout: o.opensky_timeout,
    })?;
    Ok(OpenSkySource::new(client, poll))
}

/// `contrail record`: OpenSky `/states/all` responses -> one JSON line per poll.
async fn record(args: RecordArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut source = opensky_source(&args.opensky)?;
    source.keep_bodies = true;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
    }
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.out)
            .with_context(|| format!("--out {}", args.out.display()))?,
    );
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let (mut states, mut off_contract) = (0usize, 0usize);
    loop {
        if args
            .opensky
            .polls
            .is_some_and(|n| source.stats().polls >= n)
        {
            break;
        }
        tokio::select! {
            () = &mut signal => break,
            payloads = source.cycle() => states += payloads.len(),
        }
        // Rows off the contract stay in the recording as they came; replay dead-letters
        // them. Counted here, not kept.
        off_contract += source.take_rejected().len();
        for (at, body) in source.bodies.drain(..) {
            // Parsed once already; re-serialised so a pretty-printed body stays one line.
            let response: serde_json::Value = serde_json::from_slice(&body)?;
            let line = serde_json::json!({
                "poll_time": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "response": response,
            });
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
    }
    let s = source.stats();
    println!(
        "{}: {} polls recorded ({} new states, {} unchanged, {} off the contract, {} failed polls, credits left {})",
        args.out.display(),
        s.polls,
        states,
        s.unchanged,
        off_contract,
        s.failures,
        s.credits_remaining
            .map_or_else(|| "unknown".to_string(), |c| c.to_string())
    );
    Ok(())
}

fn simulator_source(s: &SimulatorArgs, speed: Speed) -> anyhow::Result<SimulatorSource> {
    let config = SimulatorConfig {
        seed: s.seed,
        aircraft: s.aircraft as usize,
        anomaly_rate: s.anomaly_rate,
        invalid_rate: s.invalid_rate,
        report_interval_s: s.report_interval,
        start: s.start_time.unwrap_or_else(chrono::Utc::now),
    };
    Ok(SimulatorSource::new(
        config,
        speed,
        s.max_records,
        s.labels_out.clone(),
    )?)
}

/// `partials`: merge global windows through the partials topic (Kafka) rather than
/// in-process (the demo).
fn process_config(p: &PipelineArgs, topics: &TopicArgs, partials: bool) -> ProcessConfig {
    ProcessConfig {
        sql_dir: p.sql.sql_dir.clone(),
        grid_cell_deg: p.sql.grid_cell_deg,
        topics: OutputTopics {
            processed: topics.topic_processed.clone(),
            dead_letter: topics.topic_dead_letter.clone(),
            aggregated: topics.topic_aggregated.clone(),
            aircraft_aggregates: topics.topic_aircraft_aggregates.clone(),
            late: topics.topic_late.clone(),
            changelog: topics.topic_window_state.clone(),
            partials: partials.then(|| topics.topic_window_partials.clone()),
        },
        archive_dir: (!p.no_archive).then(|| p.data_dir.clone()),
        archive_compression: p.archive_compression,
        batch: p.batch_limits(),
        model_path: Some(p.model.clone()),
        window: p.window.spec(),
        source_partitions: 1,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Cancels `stop` on Ctrl-C or SIGTERM, then never resolves: the work it stopped ends the
/// caller's `select!`.
async fn cancel_on_signal(stop: CancellationToken, what: &'static str) {
    shutdown_signal().await;
    tracing::info!("signal received: {what}");
    stop.cancel();
    std::future::pending::<()>().await;
}

/// `contrail demo`: simulator -> in-process bus -> pipeline -> archive, no broker.
async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(start) = args.source.simulator.start_time
        && args.source.source == SourceKind::Simulator
    {
        let lead = args.pipeline.window.max_event_lead;
        if start - chrono::Utc::now()
            > chrono::Duration::from_std(lead).unwrap_or(chrono::TimeDelta::MAX)
        {
            anyhow::bail!(
                "--start-time {} is more than --max-event-lead ({lead:?}) ahead of now: no record would count in a window; raise --max-event-lead",
                start.to_rfc3339()
            );
        }
    }
    let clock: SharedClock = Arc::new(SystemClock);
    let topics = TopicArgs::default();
    // Each subscriber may have two micro-batches waiting: enough to keep the processor
    // busy, while a backfill's memory stays bounded (was 100,000 records per topic).
    let capacity = 2 * (args.pipeline.batch_max_records as usize).max(1);
    let bus = MemoryBus::with_offset_base(capacity, clock.now_micros());
    let mut raw = bus.subscribe(&topics.topic_raw);
    let dead_letters = bus.subscribe(&topics.topic_dead_letter);
    // The live store reads the output topics from the start: nothing to warm up.
    let store = Arc::new(LiveStore::new(store_limits(&args.grpc)));
    store.set_ready();
    let feeds: Vec<_> = [
        (&topics.topic_processed, Feed::Processed),
        (&topics.topic_aggregated, Feed::Windows),
        (&topics.topic_aircraft_aggregates, Feed::AircraftWindows),
    ]
    .into_iter()
    .map(|(topic, feed)| {
        tokio::spawn(feed_from_bus(
            Arc::clone(&store),
            feed,
            bus.subscribe(topic),
        ))
    })
    .collect();
    let stop_servers = CancellationToken::new();
    let archive = (!args.pipeline.no_archive).then(|| args.pipeline.data_dir.clone());
    let grpc = start_grpc(
        &args.grpc,
        Arc::clone(&store),
        archive,
        stop_servers.clone(),
    )
    .await?;
    let process_stats = Arc::new(ProcessStats::default());
    let ingest_stats = Arc::new(IngestStats::default());
    let metrics: crate::metrics::MetricsFn = {
        let (i, p) = (Arc::clone(&ingest_stats), Arc::clone(&process_stats));
        let g = Arc::clone(&grpc.stats);
        Arc::new(move |e| {
            crate::metrics::ingest(e, &i);
            crate::metrics::process(e, &p);
            crate::metrics::grpc(e, &g);
        })
    };
    let notices: crate::dashboard::NoticesFn = {
        let p = Arc::clone(&process_stats);
        Arc::new(move || p.notices())
    };
    let http = start_dashboard(
        &args.dashboard,
        Arc::clone(&store),
        metrics,
        notices,
        stop_servers.clone(),
    )
    .await?;

    let mut processor = Processor::new(
        process_config(&args.pipeline, &topics, false),
        Arc::clone(&clock),
        Arc::clone(&process_stats),
    )
    .await?;
    let dl_path = args.pipeline.data_dir.join("dead-letter.jsonl");
    if let Some(dir) = processor.archive_dir() {
        println!("archive: {}", absolute(dir).display());
    }
    println!("dead letters: {}", absolute(&dl_path).display());

    let mut source = build_source(&args.source)?;
    let ingest_topics = IngestTopics {
        raw: topics.topic_raw.clone(),
        dead_letter: topics.topic_dead_letter.clone(),
    };
    let stop_source = CancellationToken::new();
    let ingest_task = {
        let (bus, stats, clock, stop) = (
            bus.clone(),
            Arc::clone(&ingest_stats),
            Arc::clone(&clock),
            stop_source.clone(),
        );
        tokio::spawn(async move {
            run_ingest(source.as_mut(), &bus, &ingest_topics, clock, stats, stop).await
        })
    };
    let process_task = tokio::spawn(async move {
        let result = run_process(&mut processor, &mut raw, CancellationToken::new()).await;
        (result, processor)
    });
    let sink_task = tokio::spawn(dead_letter_sink(dead_letters, dl_path));

    let started = Instant::now();
    let deadline = args.duration.map(Duration::from_secs_f64);
    let mut status = tokio::time::interval(Duration::from_secs_f64(args.status_interval));
    status.tick().await;
    let mut last = (Instant::now(), 0u64);
    let source_finished = tokio::select! {
        () = shutdown_signal() => { println!("stopping: signal received"); false }
        () = async { match deadline { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {
            println!("stopping: --duration reached");
            false
        }
        () = async {
            let mut check = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = status.tick() => {
                        let processed = process_stats.processed.load(Ordering::Relaxed);
                        let rate = (processed - last.1) as f64 / last.0.elapsed().as_secs_f64();
                        last = (Instant::now(), processed);
                        println!("{}", status_line(&ingest_stats, &process_stats, rate));
                    }
                    _ = check.tick() => if ingest_task.is_finished() { break; },
                }
            }
        } => { println!("stopping: source finished"); true }
    };

    // Ordered shutdown: source, then the pipeline drains what is on the bus, then sinks.
    stop_source.cancel();
    ingest_task.await.context("ingest task")??;
    bus.close(&topics.topic_raw);
    let (result, processor) = process_task.await.context("process task")?;
    result?;
    drop(processor);
    bus.close(&topics.topic_dead_letter);
    sink_task.await.context("dead-letter sink")??;
    for topic in [
        &topics.topic_processed,
        &topics.topic_aggregated,
        &topics.topic_aircraft_aggregates,
    ] {
        bus.close(topic);
    }
    for feed in feeds {
        feed.await.context("live store feed")??;
    }
    if args.keep_serving && source_finished {
        println!("source finished: still serving the dashboard and gRPC (Ctrl-C stops)");
        shutdown_signal().await;
    }
    stop_servers.cancel();
    grpc.join().await?;
    http.join().await?;
    let rate =
        process_stats.processed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("done: {}", status_line(&ingest_stats, &process_stats, rate));
    println!(
        "archive: {} Parquet files under {}",
        process_stats.archive_files.load(Ordering::Relaxed),
        absolute(&args.pipeline.data_dir.join("processed")).display()
    );
    Ok(())
}

fn store_limits(g: &GrpcArgs) -> StoreLimits {
    let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    StoreLimits {
        max_aircraft: n(g.max_aircraft),
        track_points: n(g.track_points),
        max_anomalies: n(g.max_anomalies),
        max_windows: n(g.max_windows),
        max_aircraft_windows: n(g.max_aircraft_windows),
    }
}

async fn start_grpc(
    g: &GrpcArgs,
    store: Arc<LiveStore>,
    archive: Option<std::path::PathBuf>,
    stop: CancellationToken,
) -> anyhow::Result<GrpcServer> {
    let limits = QueryLimits {
        max_rows: g.query_max_rows,
        timeout: g.query_timeout,
        memory_bytes: usize::try_from(g.query_memory_mb.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
    };
    let service = QueryService::new(store, archive, limits)?;
    let server = GrpcServer::start(g.grpc_bind, service, g.auth_token.clone(), stop).await?;
    println!(
        "grpc: {} (contrail.v1.Contrail, health, reflection{})",
        server.local_addr,
        if g.auth_token.is_some() {
            ", bearer token required"
        } else {
            ""
        }
    );
    Ok(server)
}

async fn start_dashboard(
    d: &DashboardArgs,
    store: Arc<LiveStore>,
    metrics: crate::metrics::MetricsFn,
    notices: crate::dashboard::NoticesFn,
    stop: CancellationToken,
) -> anyhow::Result<HttpServer> {
    let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let settings = Settings {
        stale_after: us(d.stale_after),
        track_timeout: us(d.track_timeout),
    };
    let server = crate::dashboard::start(
        d.http_bind,
        store,
        d.web_dir.clone(),
        settings,
        metrics,
        notices,
        stop,
    )
    .await?;
    println!("dashboard: http://{}/", server.local_addr);
    Ok(server)
}

/// `contrail serve`: the output topics (read_committed) -> live store; gRPC over it and
/// the Parquet archive.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = Arc::new(LiveStore::new(store_limits(&args.grpc)));
    let stop = CancellationToken::new();
    let topics = vec![
        FeedTopic {
            topic: args.topics.topic_processed.clone(),
            feed: Feed::Processed,
            history: args.live_history,
        },
        FeedTopic {
            topic: args.topics.topic_aggregated.clone(),
            feed: Feed::Windows,
            history: args.window_history,
        },
        FeedTopic {
            topic: args.topics.topic_aircraft_aggregates.clone(),
            feed: Feed::AircraftWindows,
            history: args.window_history,
        },
    ];
    let feeds = spawn_kafka_feed(
        Arc::clone(&store),
        args.kafka.bootstrap(),
        topics,
        stop.clone(),
    );
    let grpc = start_grpc(
        &args.grpc,
        Arc::clone(&store),
        Some(args.data_dir.clone()),
        stop.clone(),
    )
    .await?;
    let http = start_dashboard(
        &args.dashboard,
        Arc::clone(&store),
        {
            let g = Arc::clone(&grpc.stats);
            Arc::new(move |e| crate::metrics::grpc(e, &g))
        },
        Arc::new(Vec::new),
        stop.clone(),
    )
    .await?;
    shutdown_signal().await;
    println!("stopping: signal received");
    stop.cancel();
    grpc.join().await?;
    http.join().await?;
    for f in feeds {
        let _ = tokio::task::spawn_blocking(move || f.join()).await;
    }
    Ok(())
}

fn status_line(ingest: &IngestStats, process: &ProcessStats, rate: f64) -> String {
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    format!(
        "read {} | published {} | duplicates {} | processed {} | anomalies {} | dead-lettered {} | late {} | windows {} | batches {} | {:.0} events/s",
        l(&ingest.read),
        l(&ingest.published),
        l(&ingest.duplicates),
        l(&process.processed),
        l(&process.anomalies),
        l(&ingest.dead_lettered) + l(&process.dead_lettered),
        l(&process.late),
        l(&process.windows),
        l(&process.batches),
        rate
    )
}

fn absolute(p: &Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Appends dead letters to a JSON-lines file until the topic ends.
async fn dead_letter_sink(
    mut consumer: crate::bus::memory::MemoryConsumer,
    path: std::path::PathBuf,
) -> crate::error::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| crate::error::Error::io("creating data folder", dir, e))?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|e| crate::error::Error::io("opening dead-letter file", &path, e))?;
    while let Some(batch) = consumer
        .next_batch(BatchLimits::new(10_000, Duration::from_millis(500)))
        .await?
    {
        for m in &batch {
            // Payloads are DeadLetter JSON already; check, so the file only holds that.
            debug_assert!(serde_json::from_slice::<DeadLetter>(&m.payload).is_ok());
            file.write_all(&m.payload)
                .await
                .map_err(|e| crate::error::Error::io("writing dead letters", &path, e))?;
            file.write_all(b"\n")
                .await
                .map_err(|e| crate::error::Error::io("writing dead letters", &path, e))?;
        }
        consumer.commit(Vec::new()).await?;
    }
    file.flush()
        .await
        .map_err(|e| crate::error::Error::io("writing dead letters", &path, e))?;
    Ok(())
}

/// `contrail ingest`: a source -> Kafka.
async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let bootstrap = args.kafka.bootstrap();
    let publisher = KafkaPublisher::new(&bootstrap)?;
    let mut source = build_source(&args.source)?;
    let stats = Arc::new(IngestStats::default());
    let topics = IngestTopics {
        raw: args.topics.topic_raw.clone(),
        dead_letter: args.topics.topic_dead_letter.clone(),
    };
    let stop = CancellationToken::new();
    let stop_http = CancellationToken::new();
    // Ready once the broker has answered for both topics (they exist, it is reachable).
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (ready, bootstrap, stop) = (Arc::clone(&ready), bootstrap.clone(), stop_http.clone());
        let names = [topics.raw.clone(), topics.dead_letter.clone()];
        tokio::spawn(async move {
            loop {
                let mut ok = true;
                for t in &names {
                    if let Err(e) = partition_count(&bootstrap, t).await {
                        tracing::warn!(error = %e, topic = %t, "not ready: the broker did not answer for the topic");
                        ok = false;
                    }
                }
                if ok {
                    ready.store(true, Ordering::Release);
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        });
    }
    let http = HttpServer::start(
        args.http_bind,
        health::ingest_router(
            match args.source.source {
                SourceKind::Simulator => "simulator",
                SourceKind::Opensky => "opensky",
                SourceKind::Replay => "replay",
            },
            Arc::clone(&stats),
            source.health(),
            ready,
        ),
        stop_http.clone(),
    )
    .await?;
    println!("http: {} (/metrics, /health, /ready)", http.local_addr);
    tracing::info!(%bootstrap, topic = %topics.raw, "ingesting");
    let run = run_ingest(
        source.as_mut(),
        &publisher as &dyn Publisher,
        &topics,
        Arc::new(SystemClock),
        Arc::clone(&stats),
        stop.clone(),
    );
    let report = async {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(args.status_interval));
        tick.tick().await;
        loop {
            tick.tick().await;
            log_ingest(&stats);
        }
    };
    let signal = cancel_on_signal(stop.clone(), "stopping the source");
    tokio::select! {
        r = run => r?,
        () = report => {}
        () = signal => {}
    }
    log_ingest(&stats);
    stop_http.cancel();
    http.join().await?;
    Ok(())
}

fn log_ingest(stats: &IngestStats) {
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    tracing::info!(
        read = l(&stats.read),
        published = l(&stats.published),
        duplicates = l(&stats.duplicates),
        dead_lettered = l(&stats.dead_lettered),
        "ingest"
    );
}

/// `contrail process`: Kafka -> pipeline -> Kafka + archive, one transaction per batch.
async fn process(args: ProcessArgs) -> anyhow::Result<()> {
    let bootstrap = args.kafka.bootstrap();
    let stats = Arc::new(ProcessStats::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_http = CancellationToken::new();
    let http = HttpServer::start(
        args.http_bind,
        health::process_router(Arc::clone(&stats), Arc::clone(&ready)),
        stop_http.clone(),
    )
    .await?;
    println!("http: {} (/metrics, /health, /ready)", http.local_addr);
    let t = &args.topics;
    let raw_partitions = partition_count(&bootstrap, &t.topic_raw).await?;
    let changelog_partitions = partition_count(&bootstrap, &t.topic_window_state).await?;
    if changelog_partitions < raw_partitions {
        anyhow::bail!(
            "{} has {changelog_partitions} partitions but {} has {raw_partitions}: the changelog needs one per raw partition",
            t.topic_window_state,
            t.topic_raw
        );
    }
    partition_count(&bootstrap, &t.topic_window_partials).await?;
    let mut config = process_config(&args.pipeline, t, true);
    config.source_partitions = raw_partitions;
    let mut processor = Processor::new(config, Arc::new(SystemClock), Arc::clone(&stats))
        .await?
        .with_changelog(Arc::new(KafkaChangelogReader {
            bootstrap: bootstrap.clone(),
            topic: t.topic_window_state.clone(),
        }));
    let transactional_id =
        args.transactional_id
            .clone()
            .unwrap_or_else(|| match &args.instance_id {
                Some(instance) => format!("{}-{instance}", args.group_id),
                None => format!(
                    "{}-{}-{}",
                    args.group_id,
                    std::process::id(),
                    crate::clock::Clock::now_micros(&SystemClock)
                ),
            });
    let mut consumer = KafkaBatchConsumer::new(&KafkaConsumerConfig {
        bootstrap: bootstrap.clone(),
        group_id: args.group_id.clone(),
        topics: vec![
            args.topics.topic_raw.clone(),
            args.topics.topic_window_partials.clone(),
        ],
        transactional_id,
        instance_id: args.instance_id.clone(),
        transactional: !args.no_transactions,
    })
    .await?;
    if args.no_transactions {
        tracing::warn!("--no-transactions: at-least-once; outputs may repeat after a failure");
    }
    tracing::info!(%bootstrap, group = %args.group_id, topic = %args.topics.topic_raw, "processing");
    ready.store(true, Ordering::Release);
    let stop = CancellationToken::new();
    // Throughput counts from the first record, not from start-up and the group join.
    let started = std::sync::OnceLock::new();
    let run = run_process(
        &mut processor,
        &mut consumer as &mut dyn BatchConsumer,
        stop.clone(),
    );
    let watch = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_log = Instant::now();
        loop {
            tick.tick().await;
            if stats.consumed.load(Ordering::Relaxed) > 0 {
                started.get_or_init(Instant::now);
            }
            if args
                .stop_after
                .is_some_and(|n| stats.consumed.load(Ordering::Relaxed) >= n)
            {
                tracing::info!("--stop-after reached");
                stop.cancel();
            }
            if last_log.elapsed().as_secs_f64() >= args.status_interval {
                last_log = Instant::now();
                log_process(&stats, started.get());
            }
        }
    };
    let signal = cancel_on_signal(stop.clone(), "finishing the current batch");
    tokio::select! {
        r = run => r?,
        () = watch => {}
        () = signal => {}
    }
    log_process(&stats, started.get());
    stop_http.cancel();
    http.join().await?;
    Ok(())
}

fn log_process(stats: &ProcessStats, started: Option<&Instant>) {
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let secs = started.map_or(f64::INFINITY, |s| s.elapsed().as_secs_f64());
    tracing::info!(
        consumed = l(&stats.consumed),
        processed = l(&stats.processed),
        dead_lettered = l(&stats.dead_lettered),
        late = l(&stats.late),
        aircraft_windows = l(&stats.aircraft_windows),
        windows = l(&stats.windows),
        batches = l(&stats.batches),
        archive_files = l(&stats.archive_files),
        records_per_s = (l(&stats.consumed) as f64 / secs) as u64,
        // Where the loop's time went, in seconds so far: waiting for input, processing,
        // waiting for commits.
        poll_s = format!("{:.1}", stats.poll_seconds.sum()),
        stage_s = format!("{:.1}", stats.stage_seconds.sum()),
        commit_wait_s = format!("{:.1}", stats.commit_wait_seconds.sum()),
        "process"
    );
}

/// `contrail topics delete`: refuses without `--yes`.
async fn topics_delete(args: TopicsDeleteArgs) -> anyhow::Result<()> {
    let names: Vec<&str> = args.topics.all().iter().map(|s| s.as_str()).collect();
    if !args.yes {
        anyhow::bail!(
            "topics delete removes {} and every record in them; pass --yes to confirm",
            names.join(", ")
        );
    }
    let bootstrap = args.kafka.bootstrap();
    for (name, outcome) in delete_topics(&bootstrap, &names).await? {
        println!(
            "{name}: {}",
            match outcome {
                Deletion::Deleted => "deleted",
                Deletion::Absent => "absent",
            }
        );
    }
    Ok(())
}

/// `contrail topics create`.
async fn topics_create(args: TopicsCreateArgs) -> anyhow::Result<()> {
    let t = &args.topics;
    let specs: Vec<TopicSpec> = t
        .all()
        .into_iter()
        .map(|name| TopicSpec {
            name: name.clone(),
            // One partition: one processor of the group merges the global windows.
            partitions: if *name == t.topic_window_partials {
                1
            } else {
                args.partitions
            },
            compacted: *name == t.topic_window_state,
        })
        .collect();
    let bootstrap = args.kafka.bootstrap();
    for (name, outcome) in create_topics(&bootstrap, &specs, args.replication_factor).await? {
        println!(
            "{name}: {}",
            match outcome {
                crate::bus::kafka::TopicOutcome::Created => "created",
                crate::bus::kafka::TopicOutcome::AlreadyExisted => "exists",
            }
        );
    }
    Ok(())
}
