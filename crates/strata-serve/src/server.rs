//! The HTTP side: one `/v2/{*rest}` route, split on the last `/manifests/`, `/blobs/` or
//! `/tags/list`; resolution, lookup, forwarding to the owner, and builds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

use crate::Config;
use crate::api::ApiError;
use crate::backend::Backend;
use crate::flight::Flights;
use crate::name::{self, NameError, Target};
use crate::prepare::{self, BuildSettings, Manifest, Paths, Prepared};

/// Header a replica sets when it forwards a request to the owner (who then builds itself).
const FORWARDED: &str = "x-strata-forwarded";
/// Most entries of the in-memory manifest cache before it is cleared.
const CACHE_LIMIT: usize = 10_000;

/// Counters, served as JSON at `/_strata/stats`.
#[derive(Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Resolutions started (archive read, key derived).
    pub resolves: AtomicU64,
    /// Builds started by this replica.
    pub builds: AtomicU64,
    /// Builds that failed.
    pub build_failures: AtomicU64,
    /// Requests forwarded to another replica.
    pub forwarded: AtomicU64,
}

type Shared<T> = Result<T, ApiError>;

struct Inner {
    cfg: Config,
    backend: Backend,
    paths: Paths,
    settings: BuildSettings,
    stats: Stats,
    /// Canonical name → (when, prepared): `latest` resolutions reused for `resolve_ttl`.
    resolved: Mutex<HashMap<String, (Instant, Arc<Prepared>)>>,
    /// Name or key → (when, message): failures remembered for `failure_ttl`.
    failures: Mutex<HashMap<String, (Instant, String)>>,
    /// Key or digest → manifest: immutable, so caching them is always right.
    manifests: Mutex<HashMap<String, Manifest>>,
    resolving: Flights<Shared<Arc<Prepared>>>,
    building: Flights<Shared<Manifest>>,
    slots: tokio::sync::Semaphore,
    peers: reqwest::Client,
}

type App = Arc<Inner>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The router of a server configured by `cfg`.
pub fn router(cfg: Config, scripts: bool) -> Result<Router, String> {
    let backend = Backend::new(&cfg.backend, cfg.backend_plain_http)?;
    let paths = Paths {
        specs: cfg.specs.clone(),
        work: cfg.store.join("serve-work"),
        debian_cache: cfg.debian_cache.clone(),
        scripts,
    };
    let settings = BuildSettings {
        store: cfg.store.clone(),
        threads: cfg.threads,
    };
    let peers = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let inner = Inner {
        slots: tokio::sync::Semaphore::new(cfg.max_builds.max(1)),
        cfg,
        backend,
        paths,
        settings,
        stats: Stats::default(),
        resolved: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        manifests: Mutex::new(HashMap::new()),
        resolving: Flights::new(),
        building: Flights::new(),
        peers,
    };
    Ok(Router::new()
        .route("/v2/", get(ping))
        .route("/v2", get(ping))
        .route("/v2/{*rest}", get(dispatch))
        .route("/_strata/stats", get(stats))
        .route("/_strata/resolve/{*name}", get(resolve_info))
        .with_state(Arc::new(inner)))
}

async fn ping() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static("docker-distribution-api-version"),
                "registry/2.0",
            ),
        ],
        "{}",
    )
        .into_response()
}

async fn stats(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&app.stats).unwrap_or_default(),
    )
        .into_response()
}

/// `/_strata/resolve/NAME`: what `NAME:latest` resolves to now (key, Releases) and the
/// replicas in the order they would build it.
async fn resolve_info(State(app): State<App>, Path(name): Path<String>) -> Response {
    let r = async {
        let target = name::parse(&name).map_err(name_error)?;
        let p = resolve(&app, &target).await?;
        Ok::<_, ApiError>(serde_json::json!({
            "name": p.name,
            "key": p.key,
            "releases": p.releases,
            "owners": app.owners(&p.key),
        }))
    }
    .await;
    match r {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// What a `/v2/` path asks for.
enum Route<'a> {
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Tags(&'a str),
}

fn route(rest: &str) -> Option<Route<'_>> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    let m = rest.rfind("/manifests/");
    let b = rest.rfind("/blobs/");
    match (m, b) {
        (Some(i), bi) if bi.is_none_or(|j| i > j) => Some(Route::Manifest(
            &rest[..i],
            &rest[i + "/manifests/".len()..],
        )),
        (_, Some(j)) => Some(Route::Blob(&rest[..j], &rest[j + "/blobs/".len()..])),
        _ => None,
    }
}

fn name_error(e: NameError) -> ApiError {
    match e {
        NameError::Invalid(..) => {
            ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string())
        }
        NameError::Unknown(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", e.to_string())
        }
    }
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
}

async fn dispatch(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Response {
    let result = match route(&rest) {
        Some(Route::Manifest(n, r)) => manifest(&app, &method, &headers, n, r).await,
        Some(Route::Blob(n, d)) => blob(&app, method, &headers, n, d).await,
        Some(Route::Tags(n)) => tags(n),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no such endpoint /v2/{rest}"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn tags(name: &str) -> Result<Response, ApiError> {
    name::parse(name).map_err(name_error)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "name": name, "tags": ["latest"] }).to_string(),
    )
        .into_response())
}

fn manifest_response(m: &Manifest, key: Option<&str>) -> Response {
    let mut resp = Response::new(Body::from(m.bytes.clone()));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&m.media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
    if let Ok(v) = HeaderValue::from_str(&m.digest) {
        h.insert("docker-content-digest", v.clone());
        h.insert(header::ETAG, v);
    }
    if let Some(k) = key.and_then(|k| HeaderValue::from_str(k).ok()) {
        h.insert("strata-cache-key", k);
    }
    resp
}

impl Inner {
    fn log(&self, msg: &str) {
        (self.cfg.log)(msg);
    }

    fn failure(&self, what: &str) -> Option<String> {
        let mut f = lock(&self.failures);
        match f.get(what) {
            Some((at, msg)) if at.elapsed() < self.cfg.failure_ttl => Some(msg.clone()),
            Some(_) => {
                f.remove(what);
                None
            }
            None => None,
        }
    }

    fn remember_failure(&self, what: &str, msg: &str) {
        let mut f = lock(&self.failures);
        if f.len() > CACHE_LIMIT {
            f.clear();
        }
        f.insert(what.to_owned(), (Instant::now(), msg.to_owned()));
    }

    fn cached(&self, key: &str) -> Option<Manifest> {
        lock(&self.manifests).get(key).cloned()
    }

    fn cache(&self, key: &str, m: &Manifest) {
        let mut c = lock(&self.manifests);
        if c.len() > CACHE_LIMIT {
            c.clear();
        }
        c.insert(key.to_owned(), m.clone());
        c.insert(m.digest.clone(), m.clone());
    }

    /// The replicas in the order they should build `key` (rendezvous hashing).
    fn owners(&self, key: &str) -> Vec<String> {
        let mut peers: Vec<(String, String)> = self
            .cfg
            .peers
            .iter()
            .map(|p| {
                let p = p.trim_end_matches('/').to_owned();
                let w = hex::encode(Sha256::digest(format!("{key}\n{p}").as_bytes()));
                (w, p)
            })
            .collect();
        peers.sort_by(|a, b| b.0.cmp(&a.0));
        peers.into_iter().map(|(_, p)| p).collect()
    }
}

async fn manifest(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    name: &str,
    reference: &str,
) -> Result<Response, ApiError> {
    let target = name::parse(name).map_err(name_error)?;
    if reference.contains(':') {
        if !valid_digest(reference) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("{reference:?} is not a sha256 digest"),
            ));
        }
        let m = match app.cached(reference) {
            Some(m) => m,
            None => {
                let m = app.backend.manifest(reference).await?.ok_or_else(|| {
                    ApiError::manifest_unknown(format!("{name}@{reference}: no such manifest"))
                })?;
                app.cache(reference, &m);
                m
            }
        };
        return Ok(manifest_response(&m, None));
    }
    if let Some(key) = reference.strip_prefix("k-") {
        if key.len() != 64 || !key.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(ApiError::manifest_unknown(format!(
                "{name}:{reference}: a key tag is k- and 64 hex digits"
            )));
        }
        let m = match app.cached(reference) {
            Some(m) => m,
            None => {
                let m = app.backend.manifest(reference).await?.ok_or_else(|| {
                    ApiError::manifest_unknown(format!(
                        "{name}:{reference}: no image was built for this key"
                    ))
                })?;
                app.cache(reference, &m);
                m
            }
        };
        return Ok(manifest_response(&m, Some(reference)));
    }
    let target = match target {
        Target::Spec(n) if reference != "latest" && name::valid_user_tag(reference) => {
            Target::SpecUser(n, reference.to_owned())
        }
        t if reference != "latest" => {
            let spec_hint = if matches!(t, Target::Spec(_)) {
                ", or a user half of DIR/NAME/users/"
            } else {
                ""
            };
            return Err(ApiError::manifest_unknown(format!(
                "{name}:{reference}: tags are `latest` (resolved now), `k-<key>` (a built \
                 image){spec_hint}"
            )));
        }
        t => t,
    };
    let _ = method;
    let forwarded = headers.contains_key(FORWARDED);
    let (prepared, m) = latest(app, &target, forwarded).await?;
    Ok(manifest_response(&m, Some(&prepared.key)))
}

/// Resolves `target` (reusing a resolution younger than `resolve_ttl`), then finds or builds
/// its image.
async fn latest(
    app: &App,
    target: &Target,
    forwarded: bool,
) -> Result<(Arc<Prepared>, Manifest), ApiError> {
    let prepared = resolve(app, target).await?;
    let key = prepared.key.clone();
    if let Some(m) = app.cached(&key) {
        return Ok((prepared, m));
    }
    if let Some(m) = app.backend.manifest(&key).await? {
        app.cache(&key, &m);
        return Ok((prepared, m));
    }
    if let Some(msg) = app.failure(&key) {
        return Err(ApiError::manifest_unknown(msg));
    }
    if !forwarded && !app.cfg.peers.is_empty() {
        let me = app
            .cfg
            .advertise
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_owned();
        for peer in app.owners(&key) {
            if peer == me {
                break;
            }
            match forward(app, &peer, target).await {
                Ok(m) => {
                    app.cache(&key, &m);
                    return Ok((prepared, m));
                }
                Err(Forward::Answer(e)) => return Err(e),
                Err(Forward::Down(why)) => {
                    app.log(&format!(
                        "owner {peer} of {key} is unreachable ({why}); next replica"
                    ));
                }
            }
        }
    }
    let m = build(app, &prepared).await?;
    Ok((prepared, m))
}

/// Resolves `target` now, or reuses a resolution younger than `resolve_ttl`; one resolution
/// at a time per name.
async fn resolve(app: &App, target: &Target) -> Result<Arc<Prepared>, ApiError> {
    let canonical = target.to_string();
    if let Some(msg) = app.failure(&canonical) {
        return Err(ApiError::manifest_unknown(msg));
    }
    let fresh = lock(&app.resolved)
        .get(&canonical)
        .filter(|(at, _)| at.elapsed() < app.cfg.resolve_ttl)
        .map(|(_, p)| p.clone());
    let prepared: Arc<Prepared> = match fresh {
        Some(p) => p,
        None => {
            let (flight, _) = app.resolving.join(
                &canonical,
                || {
                    let app = app.clone();
                    let target = target.clone();
                    let canonical = canonical.clone();
                    async move {
                        app.stats.resolves.fetch_add(1, Ordering::Relaxed);
                        let paths = app.paths.clone();
                        let t = target.clone();
                        let r = tokio::task::spawn_blocking(move || prepare::prepare(&t, &paths))
                            .await
                            .unwrap_or_else(|e| Err(format!("resolving failed: {e}").into()));
                        match r {
                            Ok(p) => {
                                let p = Arc::new(p);
                                let mut memo = lock(&app.resolved);
                                if memo.len() > CACHE_LIMIT {
                                    memo.clear();
                                }
                                memo.insert(canonical, (Instant::now(), p.clone()));
                                Ok(p)
                            }
                            Err(f) => {
                                let msg = format!("{canonical}: {}", f.message);
                                app.log(&format!("resolve failed: {msg}"));
                                if f.retryable {
                                    // The archive is unreachable: not the name's fault.
                                    return Err(ApiError::backend(msg));
                                }
                                app.remember_failure(&canonical, &msg);
                                Err(ApiError::manifest_unknown(msg))
                            }
                        }
                    }
                },
                Err(ApiError::manifest_unknown("resolving failed")),
            );
            flight.await?
        }
    };
    Ok(prepared)
}

enum Forward {
    /// The peer answered with an error to pass on.
    Answer(ApiError),
    /// The peer could not be reached or dropped the connection.
    Down(String),
}

/// Asks `peer` for `name:latest` (it builds it as the owner), within the build wait.
async fn forward(app: &App, peer: &str, target: &Target) -> Result<Manifest, Forward> {
    app.stats.forwarded.fetch_add(1, Ordering::Relaxed);
    let (repository, tag) = target.repository_and_tag();
    let resp = app
        .peers
        .get(format!("{peer}/v2/{repository}/manifests/{tag}"))
        .header(FORWARDED, "1")
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .timeout(app.cfg.build_wait + Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| Forward::Down(e.to_string()))?;
    let status = resp.status();
    let media_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Forward::Down(e.to_string()))?;
    if status.is_success() {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        return Ok(Manifest {
            bytes,
            media_type,
            digest,
        });
    }
    if status.is_server_error() {
        return Err(Forward::Down(format!("HTTP {status}")));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = parsed["errors"][0]["message"]
        .as_str()
        .unwrap_or("the owner replica refused the request")
        .to_owned();
    let code = match parsed["errors"][0]["code"].as_str() {
        Some("TOOMANYREQUESTS") => "TOOMANYREQUESTS",
        Some("NAME_INVALID") => "NAME_INVALID",
        _ => "MANIFEST_UNKNOWN",
    };
    let mut e = ApiError::new(status, code, message);
    if status == StatusCode::TOO_MANY_REQUESTS {
        e.retry_after = Some(10);
    }
    Err(Forward::Answer(e))
}

/// Builds `p` once however many requests wait for it; waits at most `build_wait`.
async fn build(app: &App, p: &Arc<Prepared>) -> Result<Manifest, ApiError> {
    let (flight, _) = app.building.join(
        &p.key,
        || {
            let app = app.clone();
            let p = p.clone();
            async move {
                let _slot = app.slots.acquire().await;
                // Another replica may have built it while this one waited for a slot.
                if let Some(m) = app.backend.manifest(&p.key).await? {
                    app.cache(&p.key, &m);
                    return Ok(m);
                }
                app.stats.builds.fetch_add(1, Ordering::Relaxed);
                app.log(&format!("building {} ({})", p.name, p.key));
                let started = Instant::now();
                let (pp, settings, client, backend) = (
                    p.clone(),
                    app.settings.clone(),
                    app.cfg.client.clone(),
                    app.cfg.backend.clone(),
                );
                let r = tokio::task::spawn_blocking(move || {
                    prepare::build_and_push(&pp, &settings, &client, &backend)
                })
                .await
                .unwrap_or_else(|e| Err(format!("the build failed: {e}")));
                match r {
                    Ok(m) => {
                        app.log(&format!(
                            "built {} ({}) in {:.1} s: {}",
                            p.name,
                            p.key,
                            started.elapsed().as_secs_f64(),
                            m.digest
                        ));
                        app.cache(&p.key, &m);
                        Ok(m)
                    }
                    Err(msg) => {
                        app.stats.build_failures.fetch_add(1, Ordering::Relaxed);
                        let msg = format!("{}: build failed: {msg}", p.name);
                        app.log(&msg);
                        app.remember_failure(&p.key, &msg);
                        Err(ApiError::manifest_unknown(msg))
                    }
                }
            }
        },
        Err(ApiError::manifest_unknown("the build failed")),
    );
    match tokio::time::timeout(app.cfg.build_wait, flight).await {
        Ok(r) => r,
        Err(_) => Err(ApiError {
            retry_after: Some(10),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                format!(
                    "{} is still being built (waited {} s); it will be cached: pull again",
                    p.name,
                    app.cfg.build_wait.as_secs()
                ),
            )
        }),
    }
}

async fn blob(
    app: &App,
    method: Method,
    headers: &HeaderMap,
    name: &str,
    digest: &str,
) -> Result<Response, ApiError> {
    name::parse(name).map_err(name_error)?;
    if !valid_digest(digest) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("{digest:?} is not a sha256 digest"),
        ));
    }
    if app.cfg.redirect_blobs && method == Method::GET {
        let location = format!("{}/blobs/{digest}", app.backend.base);
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, location)
            .header("docker-content-digest", digest)
            .body(Body::empty())
            .map_err(|e| ApiError::backend(format!("redirecting blob {digest}: {e}")));
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let m = if method == Method::HEAD {
        reqwest::Method::HEAD
    } else {
        reqwest::Method::GET
    };
    let resp = app.backend.blob(m, digest, range).await?;
    let status = resp.status().as_u16();
    match status {
        200 | 206 | 416 => {}
        404 => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                format!("{name}: no blob {digest}"),
            ));
        }
        s => {
            return Err(ApiError::backend(format!(
                "the backend registry answered HTTP {s} for blob {digest}"
            )));
        }
    }
    let mut out = Response::builder().status(status);
    for h in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
        header::ACCEPT_RANGES,
        header::ETAG,
    ] {
        if let Some(v) = resp.headers().get(&h) {
            out = out.header(h, v.clone());
        }
    }
    out = out.header("docker-content-digest", digest);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(resp.bytes_stream())
    };
    out.body(body)
        .map_err(|e| ApiError::backend(format!("relaying blob {digest}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_on_the_last_marker() {
        let Some(Route::Manifest(n, r)) = route("debian/bookworm/manifests/manifests/latest")
        else {
            panic!()
        };
        assert_eq!((n, r), ("debian/bookworm/manifests", "latest"));
        let Some(Route::Blob(n, d)) = route("debian/bookworm/blobs/jq/blobs/sha256:ab") else {
            panic!()
        };
        assert_eq!((n, d), ("debian/bookworm/blobs/jq", "sha256:ab"));
        assert!(matches!(route("a/b/tags/list"), Some(Route::Tags("a/b"))));
        assert!(route("a/b/c").is_none());
    }
}
