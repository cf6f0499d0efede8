//! Downloads over HTTP(S): redirects followed, transient failures retried, bytes hashed while
//! they arrive and moved into the cache only when complete and verified.
//!
//! Credentials written into a URL (`https://user:token@host/...`) are sent as HTTP basic
//! authentication and never shown: every URL in a message or a lock file goes through
//! [`redact`] or has them removed.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use ureq::ResponseExt;

use crate::{Cache, FetchError, Reporter};

/// How many times a transient failure is tried again.
const RETRIES: u32 = 3;

/// A verified download in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The URL the bytes came from after redirects (with the request's credentials, if any,
    /// removed).
    pub final_url: String,
    /// The cached file.
    pub path: PathBuf,
}

/// The URL without its user information, and the `user:password` it held (percent-decoded).
pub fn strip_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_owned(), None);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_owned(), None);
    };
    let (userinfo, host) = (&authority[..at], &authority[at + 1..]);
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let clean = format!(
        "{}{}{}",
        &url[..scheme_end + 3],
        host,
        &rest[authority_end..]
    );
    (clean, Some((percent_decode(user), percent_decode(pass))))
}

/// The URL as it may be shown: user information replaced by `***`.
pub fn redact(url: &str) -> String {
    let (clean, creds) = strip_credentials(url);
    match (creds, clean.find("://")) {
        (Some(_), Some(i)) => format!("{}***@{}", &clean[..i + 3], &clean[i + 3..]),
        _ => clean,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP client for downloads.
pub struct Http {
    agent: ureq::Agent,
    backoff: Duration,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

/// One failed attempt: whether trying again may help, and what happened.
struct Failure {
    transient: bool,
    error: FetchError,
}

impl Http {
    /// A client with strata's timeouts; redirects are followed (up to 10).
    pub fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_recv_body(Some(Duration::from_secs(1800)))
            .max_redirects(10)
            // The system's trust store (ca-certificates), as curl and apt use it.
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            backoff: Duration::from_millis(250),
        }
    }

    /// Downloads `url` into the cache. With `expected`, the bytes must have that SHA-256
    /// (else [`FetchError::HashMismatch`], and nothing is kept); a cached copy is used without
    /// any request. Transient failures (connection errors, a dropped connection, 5xx, 429) are
    /// retried with a growing pause.
    pub fn download(
        &self,
        url: &str,
        expected: Option<&str>,
        cache: &Cache,
        reporter: &dyn Reporter,
    ) -> Result<Downloaded, FetchError> {
        if let Some(sha) = expected
            && let Some(path) = cache.verified(sha)?
        {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            return Ok(Downloaded {
                sha256: sha.to_owned(),
                size,
                final_url: strip_credentials(url).0,
                path,
            });
        }
        let shown = redact(url);
        let mut attempt = 0;
        loop {
            match self.attempt(url, &shown, expected, cache, reporter) {
                Ok(d) => return Ok(d),
                Err(f) if f.transient && attempt < RETRIES => {
                    attempt += 1;
                    reporter.message(&format!("{}; trying again ({attempt}/{RETRIES})", f.error));
                    std::thread::sleep(self.backoff * 2u32.pow(attempt - 1));
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    fn attempt(
        &self,
        url: &str,
        shown: &str,
        expected: Option<&str>,
        cache: &Cache,
        reporter: &dyn Reporter,
    ) -> Result<Downloaded, Failure> {
        let http_err = |transient: bool, message: String| Failure {
            transient,
            error: FetchError::Http {
                url: shown.to_owned(),
                message,
            },
        };
        let (clean, creds) = strip_credentials(url);
        let mut req = self.agent.get(&clean);
        if let Some((user, pass)) = &creds {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            req = req.header("Authorization", format!("Basic {token}"));
        }
        reporter.message(&format!("downloading {shown}"));
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(code)) => {
                let transient = code >= 500 || code == 429;
                return Err(http_err(transient, format!("the server answered {code}")));
            }
            Err(e) => return Err(http_err(true, e.to_string())),
        };
        let final_url = strip_credentials(&resp.get_uri().to_string()).0;
        let total: Option<u64> = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let tmp = cache.temp("download");
        let io_fail = |action, source| Failure {
            transient: false,
            error: FetchError::Io {
                action,
                path: tmp.clone(),
                source,
            },
        };
        let mut file = std::fs::File::create(&tmp).map_err(|e| io_fail("create", e))?;
        let mut body = resp.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        let read = loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(http_err(true, format!("the connection broke: {e}"))),
            };
            hasher.update(&buf[..n]);
            if let Err(e) = file.write_all(&buf[..n]) {
                break Err(io_fail("write", e));
            }
            size += n as u64;
            reporter.download(shown, size, total.unwrap_or(0));
        };
        let read = read.and_then(|()| match total {
            Some(t) if t != size => Err(http_err(
                true,
                format!("the connection broke after {size} of {t} bytes"),
            )),
            _ => file.sync_all().map_err(|e| io_fail("write", e)),
        });
        drop(file);
        if let Err(f) = read {
            let _ = std::fs::remove_file(&tmp);
            return Err(f);
        }
        let actual = hex::encode(hasher.finalize());
        if let Some(expected) = expected
            && expected != actual
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(Failure {
                transient: false,
                error: FetchError::HashMismatch {
                    url: shown.to_owned(),
                    expected: expected.to_owned(),
                    actual,
                },
            });
        }
        let path = cache.commit(&tmp, &actual).map_err(|error| Failure {
            transient: false,
            error,
        })?;
        Ok(Downloaded {
            sha256: actual,
            size,
            final_url,
            path,
        })
    }

    /// The same client with another first pause between retries (tests use a short one).
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_and_redacted() {
        let url = "https://bob:s%40cret@example.org:8443/a/b?x=1";
        let (clean, creds) = strip_credentials(url);
        assert_eq!(clean, "https://example.org:8443/a/b?x=1");
        assert_eq!(creds, Some(("bob".into(), "s@cret".into())));
        assert_eq!(redact(url), "https://***@example.org:8443/a/b?x=1");
        assert!(!redact(url).contains("cret"));
        assert_eq!(redact("http://h/p@q"), "http://h/p@q");
    }
}
