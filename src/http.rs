//! An axum router served on `--http-bind` until a cancellation token fires: the dashboard
//! (`serve`, `demo`) and the operations endpoints of `ingest` and `process` all run on it.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

pub struct HttpServer {
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Binds `bind` (port 0 picks one: see `local_addr`) and serves `router` until `stop`;
    /// open connections (server-sent event streams too) end with it.
    pub async fn start(
        bind: SocketAddr,
        router: axum::Router,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("--http-bind {bind}: cannot listen"))?;
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        Ok(Self { local_addr, task })
    }

    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}
