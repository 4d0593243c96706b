//! The FLix completions server: one base model with its per-feature adapters answers requests for
//! any feature combination over an OpenAI-compatible HTTP API, batching concurrent requests of
//! different combinations into one forward pass.
//!
//! - [`api`]: request parsing and validation, response bodies, error bodies;
//! - [`engine`]: the thread that owns the model and runs continuous batching;
//! - [`http`]: routes and the completion handler (whole and streamed);
//! - [`metrics`]: counters and histograms in the Prometheus text format;
//! - [`text`]: a choice's text as its tokens arrive (stop strings, streaming pieces).

pub mod api;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod model;
pub mod text;

use std::future::IntoFuture;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flix_kernels::KernelError;
use flix_model::ModelError;
use tokio::net::TcpListener;

use crate::engine::EngineConfig;
use crate::http::AppState;
use crate::metrics::Metrics;

/// Why the server could not start (or stopped with an error). Request errors never end here:
/// they are answered with an HTTP error and the server keeps going.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Engine(String),
}

/// What a request may ask for, and how much may wait.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sequences decoding at once (the batch).
    pub max_concurrent: usize,
    /// Requests waiting for the batch; more get 429.
    pub max_queue: usize,
    /// Prompts (choices) in one request: each is a sequence of the batch, so this bounds how
    /// long one request can hold the batch while others wait.
    pub max_prompts: usize,
    /// Tokens of one prompt.
    pub max_prompt_tokens: usize,
    /// The largest `max_tokens` a request may ask for.
    pub max_tokens: usize,
    /// The `Retry-After` of a 503 during shutdown, in seconds.
    pub retry_after_secs: u64,
}

impl Limits {
    fn validate(&self) -> Result<(), ServeError> {
        for (name, value) in [
            ("--max-concurrent", self.max_concurrent),
            ("--max-queue", self.max_queue),
            ("--max-prompts", self.max_prompts),
            ("--max-prompt-tokens", self.max_prompt_tokens),
            ("--max-tokens", self.max_tokens),
        ] {
            if value == 0 {
                return Err(ServeError::Config(format!("{name} must be >= 1")));
            }
        }
        Ok(())
    }
}

/// Everything `flix serve` configures.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The run (or checkpoint) directory; it records its base.
    pub run: PathBuf,
    /// When given, must be the base the run records.
    pub base: Option<PathBuf>,
    /// The name clients see (`model`); the run directory's name when None.
    pub model_id: Option<String>,
    /// cpu, cuda or cuda:N.
    pub device: String,
    pub host: String,
    /// 0: any free port (the printed line says which).
    pub port: u16,
    pub limits: Limits,
    /// After SIGTERM / Ctrl-C, how long running sequences may take to finish before they are cut.
    pub shutdown_grace: Duration,
}

/// Loads the run, listens, prints `listening on http://HOST:PORT` (stdout, flushed), and serves
/// until SIGTERM or Ctrl-C; then drains (see [`shutdown_signal`]) and returns.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    config.limits.validate()?;
    if let Some(base) = &config.base {
        model::check_base(&config.run, base)?;
    }
    let metrics = Arc::new(Metrics::new());
    let engine_config = EngineConfig {
        run: config.run.clone(),
        device: config.device.clone(),
        model_id: config
            .model_id
            .clone()
            .unwrap_or_else(|| model::default_id(&config.run)),
        max_concurrent: config.limits.max_concurrent,
        max_queue: config.limits.max_queue,
    };
    let (engine, info, engine_thread) = engine::start(engine_config, metrics.clone()).await?;
    let address = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|source| ServeError::Bind {
            address: address.clone(),
            source,
        })?;
    let local = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{local}")?;
    stdout.flush()?;

    let draining = Arc::new(AtomicBool::new(false));
    let state = AppState {
        engine: engine.clone(),
        model: Arc::new(info),
        limits: config.limits,
        metrics,
        draining: draining.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        next_id: Arc::new(AtomicU64::new(0)),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, http::router(state))
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .into_future();
    let mut server = tokio::spawn(server);

    tokio::select! {
        // The server ends on its own only on an error.
        ended = &mut server => {
            return match ended {
                Ok(result) => result.map_err(ServeError::from),
                Err(e) => Err(ServeError::Engine(format!("the server task failed: {e}"))),
            };
        }
        () = shutdown_signal() => {}
    }
    // Draining: new completions get 503 while the engine finishes what it accepted, cutting
    // whatever still runs at the deadline; then the listener closes and the open responses end.
    eprintln!(
        "shutting down: finishing accepted requests (at most {:.0} s)",
        config.shutdown_grace.as_secs_f64()
    );
    draining.store(true, Ordering::SeqCst);
    engine.drain(Instant::now() + config.shutdown_grace);
    drop(engine);
    let joined = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        tracing::error!("the engine thread panicked");
    }
    let _ = stop_tx.send(());
    // Responses of cut requests need a moment to be written; a client that never reads its
    // response does not hold the process.
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(result)) => result.map_err(ServeError::from),
        Ok(Err(e)) => Err(ServeError::Engine(format!("the server task failed: {e}"))),
        Err(_) => Ok(()),
    }
}

/// SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    () = ctrl_c => {}
                }
            }
            Err(_) => ctrl_c.await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await
}
