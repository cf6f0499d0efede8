//! `strata serve`: workspace images built on demand behind the pull side of the OCI
//! distribution API, stored on a backend registry.
//!
//! A client pulls `HOST/debian/bookworm/git/jq:latest` (or `spec/NAME:latest` for a spec of
//! `--specs DIR`); the server maps the name to a spec ([`name`]), resolves its inputs against
//! the archive as it is at that moment, and derives a cache key from the result
//! ([`prepare`]). The key is a tag of the backend repository: a manifest `HEAD` there says
//! whether the image exists. If not, one build runs (concurrent requests for the same key wait
//! for the same build, which is not cancelled when they go away), and the image is pushed to
//! the backend under its key. Blobs are streamed from the backend. The server keeps only
//! caches in memory: a restarted server finds every image on the backend again.
//!
//! With `peers`, every new key has an owner among the replicas (rendezvous hashing over the
//! peer URLs); a replica that misses an image forwards the request to the owner, and when the
//! owner cannot be reached, to the next replica in the key's order, building itself when its
//! own turn comes.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

mod api;
mod backend;
mod flight;
pub mod name;
pub mod prepare;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use server::Stats;

/// Everything `strata serve` is configured with.
#[derive(Clone)]
pub struct Config {
    /// The backend repository (`HOST[:PORT]/REPO`): images are pushed under their keys there.
    pub backend: strata_registry::Reference,
    /// Speak plain HTTP to the backend (loopback backends always are).
    pub backend_plain_http: bool,
    /// The registry client pushes go through (credentials, TLS settings).
    pub client: Arc<strata_registry::Client>,
    /// Answer blob GETs with a redirect to the backend (clients must reach it) instead of
    /// streaming them through the server.
    pub redirect_blobs: bool,
    /// `--specs DIR`.
    pub specs: Option<PathBuf>,
    /// The local store builds use (a cache: losing it costs rebuild time only).
    pub store: PathBuf,
    /// The Debian download cache.
    pub debian_cache: PathBuf,
    /// How long a request waits for a build before a retryable error.
    pub build_wait: Duration,
    /// How long a failed build or resolution is remembered.
    pub failure_ttl: Duration,
    /// How long a `latest` resolution is reused before the archive is read again.
    pub resolve_ttl: Duration,
    /// Builds running at once.
    pub max_builds: usize,
    /// Worker threads per build.
    pub threads: usize,
    /// The replicas (base URLs such as `http://serve-1:8080`), this one included.
    pub peers: Vec<String>,
    /// This replica's URL as it appears in `peers`.
    pub advertise: Option<String>,
    /// Where one-line events (builds, failures) go.
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("backend", &self.backend.to_string())
            .field("specs", &self.specs)
            .field("store", &self.store)
            .field("peers", &self.peers)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// A failure to start the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Serves on `listen` until the process is interrupted (Ctrl-C or SIGTERM). Blocking: it runs
/// its own tokio runtime.
pub fn serve(listen: SocketAddr, config: Config) -> Result<(), ServeError> {
    if !config.peers.is_empty() {
        match &config.advertise {
            Some(a)
                if config
                    .peers
                    .iter()
                    .any(|p| p.trim_end_matches('/') == a.trim_end_matches('/')) => {}
            Some(a) => {
                return Err(ServeError::Config(format!(
                    "--advertise {a} is not one of --peers ({})",
                    config.peers.join(", ")
                )));
            }
            None => {
                return Err(ServeError::Config(
                    "--peers needs --advertise URL: this replica's URL as the list spells it"
                        .into(),
                ));
            }
        }
    }
    // Probed before any runtime thread exists (it forks).
    let scripts = prepare::maintainer_scripts_run();
    (config.log)(&format!(
        "Debian maintainer scripts {} here (part of every cache key)",
        if scripts { "run" } else { "cannot run" }
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            what: "starting the runtime".into(),
            source,
        })?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Io {
                what: format!("listening on {listen}"),
                source,
            })?;
        let log = config.log.clone();
        let app = server::router(config, scripts).map_err(ServeError::Config)?;
        let addr = listener.local_addr().map_err(|source| ServeError::Io {
            what: "reading the listen address".into(),
            source,
        })?;
        log(&format!("listening on http://{addr}"));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(|source| ServeError::Io {
                what: "serving".into(),
                source,
            })
    })
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
