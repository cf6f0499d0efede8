//! A blocking client for OCI registries (the OCI distribution spec, also
//! known as the Docker registry HTTP API v2): push and pull images, with
//! anonymous, basic and bearer-token authentication.
//!
//! * Push checks every blob with `HEAD` and skips those present, mounts blobs
//!   from another repository of the same registry when the caller says where
//!   they are, uploads the rest (monolithically, or in chunks above
//!   [`ClientOptions::chunk_size`]), and puts the manifest last, so a tag
//!   never names missing blobs.
//! * Pull accepts Docker v2 schema 2 and OCI manifests, selects a platform
//!   from an image index or manifest list, and verifies the sha256 digest of
//!   everything before it is kept.
//! * Credentials come from [`ClientOptions::creds`], an auth file, Docker's
//!   `config.json` (with credential helpers) or podman's `auth.json`, and
//!   never appear in `Debug` output or errors.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

mod auth;
mod client;
mod error;
mod pull;
mod push;
mod reference;

use std::path::PathBuf;
use std::time::Duration;

pub use auth::{
    Credentials, default_auth_files, docker_config_path, find_credentials, login, lookup_in_file,
};
pub use client::Client;
pub use error::RegistryError;
pub use reference::{DOCKER_HUB, Reference};

/// OCI image manifest media type.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// A blob to push: its digest, size and media type, and the file holding its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The digest, `sha256:<hex>`.
    pub digest: String,
    /// The size in bytes.
    pub size: u64,
    /// The media type (as in the manifest's descriptor).
    pub media_type: String,
    /// The file holding exactly the blob's bytes.
    pub path: PathBuf,
    /// Another repository of the same registry known to hold this blob; push
    /// then asks the registry to mount it from there instead of uploading.
    pub mount_from: Option<String>,
}

/// An image to push: the manifest bytes (pushed as they are) and its blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushImage {
    /// The manifest, byte for byte.
    pub manifest: Vec<u8>,
    /// The manifest's media type (`Content-Type` of the manifest upload).
    pub manifest_media_type: String,
    /// The config blob.
    pub config: Blob,
    /// The layer blobs, in manifest order.
    pub layers: Vec<Blob>,
}

/// How a client connects and authenticates.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `Some(true)`: always HTTPS with certificate verification. `Some(false)`:
    /// HTTPS without verification, falling back to plain HTTP. `None`: like
    /// Docker, verify everywhere except loopback hosts (127.0.0.0/8, ::1,
    /// localhost), which are treated like `Some(false)`.
    pub tls_verify: Option<bool>,
    /// Credentials to use for every registry, overriding auth files.
    pub creds: Option<Credentials>,
    /// The one auth file to read (else [`default_auth_files`]).
    pub auth_file: Option<PathBuf>,
    /// Time limit for connecting, for the answer to a request, and for each
    /// read or write of a body (so large blobs are not cut off, but a stalled
    /// transfer is).
    pub timeout: Duration,
    /// How many times a failed request (429, 5xx, dropped connection) or an
    /// interrupted blob upload or download is tried again, with exponential
    /// backoff.
    pub retries: u32,
    /// Blobs larger than this are uploaded in chunks of this size (`PATCH`
    /// with `Content-Range`); 0 uploads every blob in one request.
    pub chunk_size: u64,
    /// How many blobs are transferred at once.
    pub parallel: usize,
    /// The first retry waits this long; each further retry waits twice as
    /// long as the one before (at most 8 s).
    pub backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: None,
            creds: None,
            auth_file: None,
            timeout: Duration::from_secs(60),
            retries: 4,
            chunk_size: 256 << 20,
            parallel: 4,
            backoff: Duration::from_millis(250),
        }
    }
}

/// What happened to one blob during a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobOutcome {
    /// The blob was uploaded.
    Uploaded,
    /// The registry already had the blob in the target repository.
    Skipped,
    /// The registry mounted the blob from another repository.
    Mounted,
}

/// Receives per-blob progress during a push. All methods have empty defaults.
pub trait Reporter: Send + Sync {
    /// A blob is about to be checked and, if needed, transferred.
    fn blob_started(&self, digest: &str, size: u64) {
        let _ = (digest, size);
    }
    /// `bytes` of the blob (counted from its start) have been sent.
    fn blob_progress(&self, digest: &str, bytes: u64) {
        let _ = (digest, bytes);
    }
    /// The blob is in the registry.
    fn blob_done(&self, digest: &str, outcome: BlobOutcome) {
        let _ = (digest, outcome);
    }
}

/// A [`Reporter`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Reporter for NoProgress {}

/// The outcome for one blob of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobReport {
    /// The blob's digest.
    pub digest: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// What was done.
    pub outcome: BlobOutcome,
}

/// The result of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// The digest of the manifest pushed.
    pub manifest_digest: String,
    /// One entry per distinct blob (config first, then layers).
    pub blobs: Vec<BlobReport>,
}

/// A platform to select from an image index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// The operating system, e.g. `linux`.
    pub os: String,
    /// The CPU architecture in Go's spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// The variant, e.g. `v7` for `arm`; `None` accepts any variant.
    pub variant: Option<String>,
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform this program runs on.
    pub fn host() -> Self {
        // The architecture name comes from the one mapping (strata-spec), so a pull selects
        // the platform a build on this machine writes.
        let arch = strata_spec::host_architecture();
        let variant = (arch == "arm").then_some("v7");
        Platform::new(std::env::consts::OS, arch, variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor from a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    /// The media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The digest, `sha256:<hex>`.
    pub digest: String,
    /// The size in bytes.
    pub size: u64,
}

/// A manifest or index as fetched: its bytes, media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// The bytes, exactly as served (their sha256 is `digest`).
    pub bytes: Vec<u8>,
    /// The media type.
    pub media_type: String,
    /// The digest, `sha256:<hex>`, verified.
    pub digest: String,
}

/// The result of a pull: every blob named here is in the blob directory,
/// verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The image manifest's bytes.
    pub manifest: Vec<u8>,
    /// The image manifest's media type.
    pub manifest_media_type: String,
    /// The image manifest's digest.
    pub manifest_digest: String,
    /// The index (or manifest list) the manifest was selected from, if the
    /// reference named one.
    pub index: Option<FetchedManifest>,
    /// The config descriptor.
    pub config: Descriptor,
    /// The layer descriptors, in manifest order.
    pub layers: Vec<Descriptor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Client>();
        assert_send_sync::<RegistryError>();
    }

    #[test]
    fn options_debug_hides_password() {
        let opts = ClientOptions {
            creds: Some(Credentials::new("bob", "s3cr3t-pw")),
            ..ClientOptions::default()
        };
        let text = format!("{opts:?}");
        assert!(
            text.contains("bob") && !text.contains("s3cr3t-pw"),
            "{text}"
        );
    }
}
