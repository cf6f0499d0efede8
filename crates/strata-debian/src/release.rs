//! `InRelease` / `Release` files: fetching, signature checks, validity and index lookup.

use std::collections::BTreeMap;
use std::io::Read;

use crate::cache::{Cache, sha256_hex, write_atomic, write_checked_later};
use crate::deb822;
use crate::trust::Keyring;
use crate::{DebianError, Reporter};

/// A verified Release of one suite of one repository.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub uri: String,
    pub suite: String,
    pub date: String,
    pub inrelease_sha256: String,
    pub by_hash: bool,
    pub no_all_packages: bool,
    /// The `Architectures` field.
    pub architectures: Vec<String>,
    /// Index path → (size, sha256).
    pub sha256: BTreeMap<String, (u64, String)>,
}

/// Seconds since the epoch now.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses an RFC 2822 date as used in Release files (`Sat, 11 Jul 2026 10:16:37 UTC`).
pub(crate) fn parse_date(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = match text.find(',') {
        Some(i) => &text[i + 1..],
        None => text,
    };
    let mut parts = text.split_whitespace();
    let day: i64 = parts.next()?.parse().ok()?;
    let month = match parts.next()?.to_ascii_lowercase().as_str() {
        "jan" => 1,
        "feb" => 2,
        "mar" => 3,
        "apr" => 4,
        "may" => 5,
        "jun" => 6,
        "jul" => 7,
        "aug" => 8,
        "sep" => 9,
        "oct" => 10,
        "nov" => 11,
        "dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next().unwrap_or("0").parse().ok()?;
    let offset = match parts.next() {
        None | Some("UTC" | "GMT" | "Z" | "UT") => 0,
        Some(z) if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            let o = hh * 3600 + mm * 60;
            if z.starts_with('-') { -o } else { o }
        }
        Some(_) => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + m * 60 + s - offset;
    u64::try_from(secs).ok()
}

/// Fetches and verifies the Release of `suite` at `uri`.
pub(crate) fn fetch_release(
    cache: &Cache,
    keyring: &Keyring,
    uri: &str,
    suite: &str,
    now: u64,
    reporter: &dyn Reporter,
) -> Result<Release, DebianError> {
    let base = format!("{}/dists/{}", uri.trim_end_matches('/'), suite);
    let in_url = format!("{base}/InRelease");
    reporter.message(&format!("fetching {in_url}"));
    let (text, raw) = match cache.get(&in_url)? {
        Some(bytes) => {
            let (text, _) = keyring.verify_cleartext(&in_url, &bytes, now)?;
            (text, bytes)
        }
        None => {
            let rel_url = format!("{base}/Release");
            let gpg_url = format!("{base}/Release.gpg");
            let rel = cache.get(&rel_url)?.ok_or_else(|| DebianError::NotFound {
                url: rel_url.clone(),
            })?;
            let sig = cache.get(&gpg_url)?.ok_or_else(|| DebianError::NotFound {
                url: gpg_url.clone(),
            })?;
            keyring.verify_detached(&rel_url, &rel, &sig, now)?;
            let text = String::from_utf8(rel.clone()).map_err(|_| DebianError::Parse {
                file: rel_url.clone(),
                message: "not UTF-8".into(),
            })?;
            (text, rel)
        }
    };
    let sha = sha256_hex(&raw);
    // Keep the signed document so a lock can be checked against it later.
    let keep = cache.file_path(&sha);
    if !keep.exists() {
        write_atomic(&keep, &raw)?;
    }
    parse_release(&in_url, &text, uri, suite, sha, now)
}

/// Parses verified Release text and checks suite, dates and validity.
pub(crate) fn parse_release(
    file: &str,
    text: &str,
    uri: &str,
    suite: &str,
    inrelease_sha256: String,
    now: u64,
) -> Result<Release, DebianError> {
    let para = deb822::paragraphs(text)
        .next()
        .ok_or_else(|| DebianError::Parse {
            file: file.to_owned(),
            message: "empty Release".into(),
        })?
        .map_err(|message| DebianError::Parse {
            file: file.to_owned(),
            message,
        })?;
    let names: Vec<&str> = ["Suite", "Codename"]
        .iter()
        .filter_map(|f| para.get(f))
        .collect();
    if !names.contains(&suite) {
        return Err(DebianError::Signature {
            file: file.to_owned(),
            reason: format!(
                "the signed Release is for suite/codename {}, not `{suite}`",
                names.join("/")
            ),
        });
    }
    let date = para.get("Date").unwrap_or("").to_owned();
    if let Some(d) = parse_date(&date)
        && d > now + 600
    {
        return Err(DebianError::Expired {
            file: file.to_owned(),
            detail: format!("its Date ({date}) is in the future"),
        });
    }
    if let Some(vu) = para.get("Valid-Until") {
        let t = parse_date(vu).ok_or_else(|| DebianError::Parse {
            file: file.to_owned(),
            message: format!("bad Valid-Until `{vu}`"),
        })?;
        if t < now {
            return Err(DebianError::Expired {
                file: file.to_owned(),
                detail: format!("it was valid until {vu}"),
            });
        }
    }
    let mut sha256 = BTreeMap::new();
    for line in para.get("SHA256").unwrap_or("").lines() {
        let mut it = line.split_whitespace();
        if let (Some(h), Some(s), Some(p)) = (it.next(), it.next(), it.next()) {
            let size = s.parse().map_err(|_| DebianError::Parse {
                file: file.to_owned(),
                message: format!("bad size in SHA256 line `{line}`"),
            })?;
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DebianError::Parse {
                    file: file.to_owned(),
                    message: format!("bad SHA256 in line `{line}`"),
                });
            }
            sha256.insert(p.to_owned(), (size, h.to_ascii_lowercase()));
        }
    }
    if sha256.is_empty() {
        return Err(DebianError::Parse {
            file: file.to_owned(),
            message: "no SHA256 index list".into(),
        });
    }
    Ok(Release {
        uri: uri.trim_end_matches('/').to_owned(),
        suite: suite.to_owned(),
        date,
        inrelease_sha256,
        by_hash: para
            .get("Acquire-By-Hash")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        no_all_packages: para
            .get("No-Support-for-Architecture-all")
            .is_some_and(|v| v.split_whitespace().any(|w| w == "Packages")),
        architectures: para
            .get("Architectures")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        sha256,
    })
}

impl Release {
    /// Fetches one `Packages` index of `component`/`arch` (`.xz`, `.gz` or plain, whichever the
    /// Release lists first in that order), verified against the Release, and returns its
    /// decompressed text. `Ok(None)` when the Release lists no such index.
    pub(crate) fn packages_index(
        &self,
        cache: &Cache,
        component: &str,
        arch: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<String>, DebianError> {
        let dir = format!("{component}/binary-{arch}");
        let base = format!("{}/dists/{}", self.uri, self.suite);
        let plain_name = format!("{base}/{dir}/Packages");
        let plain = self.sha256.get(&format!("{dir}/Packages")).cloned();
        // The decompressed index is cached under its own SHA256 when the Release lists it,
        // and checked against it on every use.
        if let Some((psize, psha)) = &plain
            && let Ok(bytes) = std::fs::read(cache.file_path(psha))
            && bytes.len() as u64 == *psize
            && sha256_hex(&bytes) == *psha
            && let Ok(text) = String::from_utf8(bytes)
        {
            return Ok(Some(text));
        }
        for ext in ["xz", "gz", ""] {
            let rel = if ext.is_empty() {
                format!("{dir}/Packages")
            } else {
                format!("{dir}/Packages.{ext}")
            };
            let Some((size, sha)) = self.sha256.get(&rel) else {
                continue;
            };
            let url = if self.by_hash {
                format!("{base}/{dir}/by-hash/SHA256/{sha}")
            } else {
                format!("{base}/{rel}")
            };
            let name = format!("{base}/{rel}");
            let decode = |r: &mut dyn Read| -> std::io::Result<String> {
                let mut text = String::new();
                match ext {
                    "xz" => liblzma::read::XzDecoder::new(std::io::BufReader::new(r))
                        .read_to_string(&mut text),
                    "gz" => flate2::read::GzDecoder::new(std::io::BufReader::new(r))
                        .read_to_string(&mut text),
                    _ => r.read_to_string(&mut text),
                }?;
                Ok(text)
            };
            let path = match cache.fetch_verified(&url, &name, Some(*size), sha, reporter) {
                // A mirror may lag behind on by-hash files: fall back to the plain path.
                Err(DebianError::Http { .. }) if self.by_hash => cache.fetch_verified(
                    &format!("{base}/{rel}"),
                    &name,
                    Some(*size),
                    sha,
                    reporter,
                )?,
                other => other?,
            };
            let mut file = std::fs::File::open(&path).map_err(|e| DebianError::Io {
                path: path.clone(),
                source: e,
            })?;
            let text = decode(&mut file).map_err(|e| DebianError::Parse {
                file: name.clone(),
                message: format!("cannot decompress: {e}"),
            })?;
            self.keep_plain(cache, &plain, &plain_name, &text)?;
            return Ok(Some(text));
        }
        Ok(None)
    }

    /// Checks a decompressed index against the Release's entry for the plain file (when it
    /// lists one) and keeps it in the cache under that SHA256 for the next build.
    fn keep_plain(
        &self,
        cache: &Cache,
        plain: &Option<(u64, String)>,
        plain_name: &str,
        text: &str,
    ) -> Result<(), DebianError> {
        let Some((psize, psha)) = plain else {
            return Ok(());
        };
        let actual = sha256_hex(text.as_bytes());
        if actual != *psha || text.len() as u64 != *psize {
            return Err(DebianError::HashMismatch {
                file: plain_name.to_owned(),
                expected: psha.clone(),
                actual,
            });
        }
        let keep = cache.file_path(psha);
        if !keep.exists() {
            // Checked against its SHA256 whenever it is read, so no fsync is needed.
            write_checked_later(&keep, text.as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_date("Sat, 11 Jul 2026 10:16:37 UTC"),
            Some(1_783_764_997)
        );
        assert_eq!(
            parse_date("Tue, 29 Feb 2000 12:00:00 +0100"),
            Some(951_822_000)
        );
        assert_eq!(parse_date("nonsense"), None);
    }
}
