//! Reads from the backend registry (async; pushes go through the blocking strata-registry
//! client in the build task). The backend must allow anonymous pulls of its repository.

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::api::ApiError;
use crate::prepare::Manifest;

/// Media types asked for.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted from the backend.
const MANIFEST_LIMIT: usize = 4 << 20;

/// The backend repository's URL and the client reading it.
#[derive(Clone)]
pub struct Backend {
    /// `http(s)://HOST/v2/REPO`.
    pub base: String,
    pub http: reqwest::Client,
    pub display: String,
}

impl Backend {
    pub fn new(reference: &strata_registry::Reference, plain: bool) -> Result<Self, String> {
        let host = reference.registry.as_str();
        let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = bare == "localhost"
            || bare == "[::1]"
            || bare
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback());
        let scheme = if plain || loopback { "http" } else { "https" };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A stalled backend ends a blob transfer instead of holding it forever.
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| format!("making the HTTP client: {e}"))?;
        Ok(Backend {
            base: format!("{scheme}://{host}/v2/{}", reference.repository),
            http,
            display: format!("{host}/{}", reference.repository),
        })
    }

    fn down(&self, e: impl std::fmt::Display) -> ApiError {
        ApiError::backend(format!(
            "the backend registry {} is unavailable: {e}",
            self.display
        ))
    }

    /// The manifest `reference` (tag or digest) names, or `None` when the backend has none.
    /// A manifest whose bytes do not match the digest the backend states (or that the
    /// reference names) is refused.
    pub async fn manifest(&self, reference: &str) -> Result<Option<Manifest>, ApiError> {
        let resp = self
            .http
            .get(format!("{}/manifests/{reference}", self.base))
            .header("Accept", ACCEPT)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.down(e))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            s => return Err(self.down(format!("manifest {reference}: HTTP {s}"))),
        }
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let stated = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if resp
            .content_length()
            .is_some_and(|l| l as usize > MANIFEST_LIMIT)
        {
            return Err(self.down(format!("manifest {reference} is too large")));
        }
        let bytes: Bytes = resp.bytes().await.map_err(|e| self.down(e))?;
        if bytes.len() > MANIFEST_LIMIT {
            return Err(self.down(format!("manifest {reference} is too large")));
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let wanted = if reference.starts_with("sha256:") {
            Some(reference.to_owned())
        } else {
            stated
        };
        if let Some(w) = wanted
            && w != digest
        {
            return Err(self.down(format!(
                "manifest {reference}: the backend sent {digest}, expected {w}"
            )));
        }
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// A blob request passed through (GET or HEAD, with the client's Range).
    pub async fn blob(
        &self,
        method: reqwest::Method,
        digest: &str,
        range: Option<&str>,
    ) -> Result<reqwest::Response, ApiError> {
        let mut req = self
            .http
            .request(method, format!("{}/blobs/{digest}", self.base));
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        req.send().await.map_err(|e| self.down(e))
    }
}
