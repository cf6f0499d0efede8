//! The error type of this crate.
//!
//! Every variant carries enough context to act on (the URL, the HTTP status,
//! the registry's own error message) and never a credential: URLs are built
//! without user info, and authorization headers are never copied into errors.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// An image reference could not be parsed.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The registry answered with an unexpected HTTP status.
    #[error("{method} {url}: HTTP {status}{}", fmt_body(body))]
    Http {
        /// The HTTP method of the request.
        method: String,
        /// The URL of the request (never containing credentials).
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's error message, summarized from its error body.
        body: String,
    },

    /// The registry (or its token server) refused the credentials, or
    /// requires credentials and none were found.
    #[error(
        "{method} {url}: authentication failed (HTTP {status}){}: {hint}",
        fmt_body(body)
    )]
    Unauthorized {
        /// The HTTP method of the request.
        method: String,
        /// The URL of the request (never containing credentials).
        url: String,
        /// The HTTP status code (401 or 403).
        status: u16,
        /// The registry's error message, summarized from its error body.
        body: String,
        /// What to check, e.g. "check the username and password for HOST".
        hint: String,
    },

    /// The request could not be sent or the answer could not be read
    /// (connection refused or dropped, TLS failure, timeout).
    #[error("{method} {url}")]
    Transport {
        /// The HTTP method of the request.
        method: String,
        /// The URL of the request (never containing credentials).
        url: String,
        /// The underlying error.
        #[source]
        source: ureq::Error,
    },

    /// Downloaded or uploaded content does not have the expected digest or size.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being checked (a URL or a description).
        what: String,
        /// The expected digest (or size).
        expected: String,
        /// The digest (or size) actually found.
        actual: String,
    },

    /// A manifest or index could not be understood.
    #[error("{url}: invalid manifest: {reason}")]
    InvalidManifest {
        /// Where the manifest came from.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An image index has no manifest for the requested platform.
    #[error("{url}: no image for platform {platform} (available: {available})")]
    PlatformNotFound {
        /// Where the index came from.
        url: String,
        /// The requested platform.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },

    /// A registry's `WWW-Authenticate` challenge or token answer could not be understood.
    #[error("{url}: authentication protocol error: {reason}")]
    AuthProtocol {
        /// The URL involved.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// A credential helper (`docker-credential-NAME`) failed.
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    CredentialHelper {
        /// The helper name (without the `docker-credential-` prefix).
        helper: String,
        /// The registry whose credentials were asked for.
        registry: String,
        /// What went wrong (never the secret).
        reason: String,
    },

    /// An auth file (`config.json`, `auth.json`) could not be read or written.
    #[error("auth file {path}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (never the secret).
        reason: String,
    },

    /// `--creds` text could not be parsed (the text itself is not repeated).
    #[error("invalid credentials: {0}")]
    InvalidCredentials(String),

    /// A local file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The client was configured in a way that cannot work.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

fn fmt_body(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl RegistryError {
    /// Builds an [`RegistryError::Io`] with the given context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        RegistryError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether trying the same operation again may succeed: dropped
    /// connections, timeouts, HTTP 429 and 5xx, and an upload session the
    /// registry forgot (e.g. after a restart).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Transport { source, .. } => transport_retryable(source),
            RegistryError::Http { status, body, .. } => {
                *status == 429
                    || (500..600).contains(status)
                    || (*status == 404 && body.contains("BLOB_UPLOAD_UNKNOWN"))
            }
            RegistryError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// The HTTP status of the registry's answer, if this error is about one.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Http { status, .. } | RegistryError::Unauthorized { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// Whether a transport-level error is worth retrying.
pub(crate) fn transport_retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
    )
}
