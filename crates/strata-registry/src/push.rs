//! Push: blobs (skip, mount, monolithic or chunked upload), then the manifest.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest as _, Sha256};

use crate::client::{Client, RegistryState, Req, ReqBody, header, qs};
use crate::error::RegistryError;
use crate::reference::{Reference, validate_digest};
use crate::{Blob, BlobOutcome, BlobReport, PushImage, PushReport, Reporter};

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Resolves a `Location` header against the registry's base URL.
fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

/// Appends a query parameter to a URL that may already have a query.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", qs(value))
}

fn push_scopes(repository: &str, blobs: &[&Blob]) -> Vec<String> {
    let mut scopes = vec![format!("repository:{repository}:pull,push")];
    for blob in blobs {
        if let Some(from) = &blob.mount_from {
            let scope = format!("repository:{from}:pull");
            if from != repository && !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    scopes
}

impl Client {
    /// Pushes an image: every blob the repository lacks (mounted from
    /// [`Blob::mount_from`] when possible, else uploaded), then the manifest
    /// under the reference's tag (or, without a tag, its digest). Nothing is
    /// tagged unless every blob is in place.
    pub fn push(
        &self,
        reference: &Reference,
        image: &PushImage,
        reporter: &dyn Reporter,
    ) -> Result<PushReport, RegistryError> {
        let mut seen = HashSet::new();
        let blobs: Vec<&Blob> = std::iter::once(&image.config)
            .chain(&image.layers)
            .filter(|b| seen.insert(b.digest.clone()))
            .collect();
        for blob in &blobs {
            validate_digest(&blob.digest).map_err(|reason| RegistryError::InvalidManifest {
                url: reference.to_string(),
                reason,
            })?;
        }
        let reg = self.registry(&reference.registry)?;
        let scopes = push_scopes(&reference.repository, &blobs);

        let outcomes = self.push_blobs(&reg, &scopes, &reference.repository, &blobs, reporter)?;
        let manifest_digest = self.put_manifest_in(
            &reg,
            &scopes,
            reference,
            &image.manifest,
            &image.manifest_media_type,
        )?;
        Ok(PushReport {
            manifest_digest,
            blobs: blobs
                .iter()
                .zip(outcomes)
                .map(|(b, outcome)| BlobReport {
                    digest: b.digest.clone(),
                    size: b.size,
                    outcome,
                })
                .collect(),
        })
    }

    /// Pushes blobs with up to `parallel` at once; outcomes in input order.
    fn push_blobs(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        repository: &str,
        blobs: &[&Blob],
        reporter: &dyn Reporter,
    ) -> Result<Vec<BlobOutcome>, RegistryError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<BlobOutcome, RegistryError>>>> =
            Mutex::new((0..blobs.len()).map(|_| None).collect());
        let workers = self.opts.parallel.clamp(1, blobs.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(blob) = blobs.get(i) else { break };
                        let r = self.push_blob_in(reg, scopes, repository, blob, reporter);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        let mut results = results
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        results[i] = Some(r);
                    }
                });
            }
        });
        let results = results
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut outcomes = Vec::with_capacity(blobs.len());
        let mut first_err = None;
        for r in results {
            match r {
                Some(Ok(o)) => outcomes.push(o),
                Some(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                None => {}
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    /// Pushes one blob to the repository of `reference` (skipping it if
    /// present, mounting it if [`Blob::mount_from`] says where it is).
    pub fn push_blob(
        &self,
        reference: &Reference,
        blob: &Blob,
        reporter: &dyn Reporter,
    ) -> Result<BlobOutcome, RegistryError> {
        validate_digest(&blob.digest).map_err(|reason| RegistryError::InvalidManifest {
            url: reference.to_string(),
            reason,
        })?;
        let reg = self.registry(&reference.registry)?;
        let scopes = push_scopes(&reference.repository, &[blob]);
        self.push_blob_in(&reg, &scopes, &reference.repository, blob, reporter)
    }

    /// Whether the repository of `reference` has the blob `digest`.
    pub fn blob_exists(&self, reference: &Reference, digest: &str) -> Result<bool, RegistryError> {
        let reg = self.registry(&reference.registry)?;
        let scopes = vec![format!("repository:{}:pull", reference.repository)];
        self.blob_exists_in(&reg, &scopes, &reference.repository, digest)
    }

    fn blob_exists_in(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        repository: &str,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        let req = Req::new(
            "HEAD",
            format!("{}/v2/{repository}/blobs/{digest}", reg.base),
        );
        let mut resp = self.request(reg, scopes, &req, true)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(&req, &mut resp, &reg.name)),
        }
    }

    fn push_blob_in(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        repository: &str,
        blob: &Blob,
        reporter: &dyn Reporter,
    ) -> Result<BlobOutcome, RegistryError> {
        reporter.blob_started(&blob.digest, blob.size);
        if self.blob_exists_in(reg, scopes, repository, &blob.digest)? {
            reporter.blob_done(&blob.digest, BlobOutcome::Skipped);
            return Ok(BlobOutcome::Skipped);
        }
        // A mount that the registry declines starts an ordinary upload session.
        let mut session = None;
        if let Some(from) = blob.mount_from.as_deref().filter(|f| *f != repository) {
            let url = format!(
                "{}/v2/{repository}/blobs/uploads/?mount={}&from={}",
                reg.base,
                qs(&blob.digest),
                qs(from)
            );
            let req = Req::new("POST", url).body(ReqBody::Bytes(&[]));
            let resp = self.request(reg, scopes, &req, true)?;
            let resp = self.expect(reg, &req, resp, &[201, 202])?;
            if resp.status().as_u16() == 201 {
                reporter.blob_done(&blob.digest, BlobOutcome::Mounted);
                return Ok(BlobOutcome::Mounted);
            }
            session = header(&resp, "location").map(|l| resolve_location(&reg.base, &l));
        }
        let mut attempt = 0;
        loop {
            match self.upload(reg, scopes, repository, blob, reporter, session.take()) {
                Ok(()) => break,
                Err(e) if e.is_retryable() && attempt < self.opts.retries => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        reporter.blob_done(&blob.digest, BlobOutcome::Uploaded);
        Ok(BlobOutcome::Uploaded)
    }

    /// One complete upload attempt: open a session (unless given), send the
    /// bytes, commit with the digest.
    fn upload(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        repository: &str,
        blob: &Blob,
        reporter: &dyn Reporter,
        session: Option<String>,
    ) -> Result<(), RegistryError> {
        let location_of = |resp: &ureq::http::Response<ureq::Body>, req: &Req<'_>| {
            header(resp, "location")
                .map(|l| resolve_location(&reg.base, &l))
                .ok_or_else(|| RegistryError::Http {
                    method: req.method.to_string(),
                    url: req.url.clone(),
                    status: resp.status().as_u16(),
                    body: "the answer has no Location header".into(),
                })
        };
        let actual = std::fs::metadata(&blob.path)
            .map_err(|e| RegistryError::io(format!("stat {}", blob.path.display()), e))?
            .len();
        if actual != blob.size {
            return Err(RegistryError::DigestMismatch {
                what: format!("size of {} ({})", blob.path.display(), blob.digest),
                expected: blob.size.to_string(),
                actual: actual.to_string(),
            });
        }
        let mut location = match session {
            Some(l) => l,
            None => {
                let req = Req::new(
                    "POST",
                    format!("{}/v2/{repository}/blobs/uploads/", reg.base),
                )
                .body(ReqBody::Bytes(&[]));
                let resp = self.request(reg, scopes, &req, true)?;
                let resp = self.expect(reg, &req, resp, &[202])?;
                location_of(&resp, &req)?
            }
        };
        let progress = |bytes: u64| reporter.blob_progress(&blob.digest, bytes);
        let chunk = self.opts.chunk_size;
        let final_req = if chunk > 0 && blob.size > chunk {
            let mut offset = 0;
            while offset < blob.size {
                let len = chunk.min(blob.size - offset);
                let req = Req::new("PATCH", location.clone())
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", format!("{offset}-{}", offset + len - 1))
                    .body(ReqBody::File {
                        path: &blob.path,
                        offset,
                        len,
                        progress: Some(&progress),
                    });
                let resp = self.request(reg, scopes, &req, false)?;
                let resp = self.expect(reg, &req, resp, &[202, 204])?;
                location = location_of(&resp, &req)?;
                offset += len;
            }
            Req::new("PUT", with_query(&location, "digest", &blob.digest))
                .header("Content-Type", "application/octet-stream")
                .body(ReqBody::Bytes(&[]))
        } else {
            Req::new("PUT", with_query(&location, "digest", &blob.digest))
                .header("Content-Type", "application/octet-stream")
                .body(ReqBody::File {
                    path: &blob.path,
                    offset: 0,
                    len: blob.size,
                    progress: Some(&progress),
                })
        };
        let resp = self.request(reg, scopes, &final_req, false)?;
        let resp = self.expect(reg, &final_req, resp, &[201, 204])?;
        if let Some(d) = header(&resp, "docker-content-digest")
            && d.starts_with("sha256:")
            && d != blob.digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob upload to {}", final_req.url),
                expected: blob.digest.clone(),
                actual: d,
            });
        }
        Ok(())
    }

    /// Puts a manifest (or index) under the reference's tag, or under its
    /// digest when the reference has no tag. Returns the manifest's digest.
    /// The blobs it names must already be in the repository.
    pub fn put_manifest(
        &self,
        reference: &Reference,
        manifest: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let reg = self.registry(&reference.registry)?;
        let scopes = vec![format!("repository:{}:pull,push", reference.repository)];
        self.put_manifest_in(&reg, &scopes, reference, manifest, media_type)
    }

    fn put_manifest_in(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        reference: &Reference,
        manifest: &[u8],
        media_type: &str,
    ) -> Result<String, RegistryError> {
        let digest = sha256_digest(manifest);
        if let Some(wanted) = &reference.digest
            && *wanted != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest for {reference}"),
                expected: wanted.clone(),
                actual: digest,
            });
        }
        let target = reference.tag.as_deref().unwrap_or(&digest);
        let req = Req::new(
            "PUT",
            format!(
                "{}/v2/{}/manifests/{target}",
                reg.base, reference.repository
            ),
        )
        .header("Content-Type", media_type)
        .body(ReqBody::Bytes(manifest));
        let resp = self.request(reg, scopes, &req, true)?;
        let resp = self.expect(reg, &req, resp, &[201, 200, 204])?;
        if let Some(d) = header(&resp, "docker-content-digest")
            && d.starts_with("sha256:")
            && d != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest upload to {}", req.url),
                expected: digest,
                actual: d,
            });
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_queries() {
        let base = "http://127.0.0.1:5000";
        assert_eq!(
            resolve_location(base, "/v2/a/blobs/uploads/u?_state=x"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(resolve_location(base, "https://other/x"), "https://other/x");
        assert_eq!(
            with_query("http://h/u?_state=x", "digest", "sha256:ab"),
            "http://h/u?_state=x&digest=sha256%3Aab"
        );
        assert_eq!(
            with_query("http://h/u", "digest", "sha256:ab"),
            "http://h/u?digest=sha256%3Aab"
        );
    }
}
