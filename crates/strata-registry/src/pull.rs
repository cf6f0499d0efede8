//! Pull: manifests (with platform selection from an index) and verified blobs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha2::{Digest as _, Sha256};

use crate::client::{Client, RegistryState, Req, header};
use crate::error::RegistryError;
use crate::push::sha256_digest;
use crate::reference::{Reference, validate_digest};
use crate::{
    Descriptor, FetchedManifest, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST, Platform, PulledImage,
};

/// The largest manifest accepted (as containerd does, 4 MiB).
const MANIFEST_LIMIT: u64 = 4 << 20;

/// Everything pull accepts, most preferred first.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

/// `blob_dir/blobs/sha256/<hex>` for a validated digest.
pub(crate) fn blob_path(blob_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    blob_dir.join("blobs").join("sha256").join(hex)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| RegistryError::io(format!("create {}", dir.display()), e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| {
        RegistryError::io(format!("create a temporary file in {}", dir.display()), e)
    })?;
    tmp.write_all(bytes)
        .map_err(|e| RegistryError::io(format!("write {}", tmp.path().display()), e))?;
    tmp.persist(path)
        .map_err(|e| RegistryError::io(format!("rename to {}", path.display()), e.error))?;
    Ok(())
}

impl Client {
    /// Fetches the manifest (or index) that `reference` names, verifying its
    /// digest against the reference's digest, else against the registry's
    /// `Docker-Content-Digest`.
    pub fn fetch_manifest(&self, reference: &Reference) -> Result<FetchedManifest, RegistryError> {
        let reg = self.registry(&reference.registry)?;
        let scopes = vec![format!("repository:{}:pull", reference.repository)];
        self.fetch_manifest_in(
            &reg,
            &scopes,
            &reference.repository,
            reference.manifest_reference(),
            reference.digest.as_deref(),
        )
    }

    /// The digest of the manifest `reference` names (`HEAD`), or `None` if
    /// the registry does not have it.
    pub fn manifest_digest(&self, reference: &Reference) -> Result<Option<String>, RegistryError> {
        let reg = self.registry(&reference.registry)?;
        let scopes = vec![format!("repository:{}:pull", reference.repository)];
        let req = Req::new(
            "HEAD",
            format!(
                "{}/v2/{}/manifests/{}",
                reg.base,
                reference.repository,
                reference.manifest_reference()
            ),
        )
        .header("Accept", ACCEPT);
        let mut resp = self.request(&reg, &scopes, &req, true)?;
        match resp.status().as_u16() {
            200 => match header(&resp, "docker-content-digest") {
                Some(d) => Ok(Some(d)),
                // Without the header, fetch the manifest to compute it.
                None => Ok(Some(self.fetch_manifest(reference)?.digest)),
            },
            404 => Ok(None),
            _ => Err(self.status_error(&req, &mut resp, &reg.name)),
        }
    }

    fn fetch_manifest_in(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        repository: &str,
        target: &str,
        expected: Option<&str>,
    ) -> Result<FetchedManifest, RegistryError> {
        let req = Req::new(
            "GET",
            format!("{}/v2/{repository}/manifests/{target}", reg.base),
        )
        .header("Accept", ACCEPT);
        let resp = self.request(reg, scopes, &req, true)?;
        let mut resp = self.expect(reg, &req, resp, &[200])?;
        let content_type = header(&resp, "content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .filter(|c| !c.is_empty());
        let served_digest = header(&resp, "docker-content-digest");
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .map_err(|source| RegistryError::Transport {
                method: "GET".into(),
                url: req.url.clone(),
                source,
            })?;
        let digest = sha256_digest(&bytes);
        let expected = expected
            .map(str::to_string)
            .or_else(|| served_digest.filter(|d| d.starts_with("sha256:")));
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: req.url.clone(),
                expected,
                actual: digest,
            });
        }
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::InvalidManifest {
                url: req.url.clone(),
                reason: format!("not JSON: {e}"),
            })?;
        let declared = json.get("mediaType").and_then(|m| m.as_str());
        let media_type = match (declared, content_type.as_deref()) {
            (Some(m), _) => m.to_string(),
            (None, Some(c)) if c != "application/json" && c != "text/plain" => c.to_string(),
            _ if json.get("manifests").is_some() => MEDIA_TYPE_OCI_INDEX.to_string(),
            _ => MEDIA_TYPE_OCI_MANIFEST.to_string(),
        };
        if json.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1)
            || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
        {
            return Err(RegistryError::InvalidManifest {
                url: req.url.clone(),
                reason: "Docker schema 1 manifests are not supported".into(),
            });
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Pulls an image: the manifest (selected for `platform` if the
    /// reference names an index), its config and layers. Every blob, the
    /// manifest and the index are written to `blob_dir/blobs/sha256/<hex>`
    /// (OCI layout style) after their digests are verified; blobs already
    /// there with the right size are kept.
    pub fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        blob_dir: &Path,
    ) -> Result<PulledImage, RegistryError> {
        let reg = self.registry(&reference.registry)?;
        let scopes = vec![format!("repository:{}:pull", reference.repository)];
        let repo = &reference.repository;
        let top = self.fetch_manifest_in(
            &reg,
            &scopes,
            repo,
            reference.manifest_reference(),
            reference.digest.as_deref(),
        )?;
        let (manifest, index) = if is_index(&top.media_type) {
            let url = format!("{}/{}@{}", reference.registry, repo, top.digest);
            let chosen = select_platform(&top.bytes, platform, &url)?;
            let m =
                self.fetch_manifest_in(&reg, &scopes, repo, &chosen.digest, Some(&chosen.digest))?;
            (m, Some(top))
        } else {
            (top, None)
        };
        if is_index(&manifest.media_type) {
            return Err(RegistryError::InvalidManifest {
                url: format!("{}/{}@{}", reference.registry, repo, manifest.digest),
                reason: "an index whose platform entry is another index".into(),
            });
        }
        let (config, layers) = parse_image_manifest(
            &manifest.bytes,
            &format!("{}/{}@{}", reference.registry, repo, manifest.digest),
        )?;

        let mut descriptors = vec![config.clone()];
        descriptors.extend(layers.iter().cloned());
        self.download_blobs(&reg, &scopes, repo, &descriptors, blob_dir)?;
        if let Some(index) = &index {
            write_atomically(&blob_path(blob_dir, &index.digest), &index.bytes)?;
        }
        write_atomically(&blob_path(blob_dir, &manifest.digest), &manifest.bytes)?;
        Ok(PulledImage {
            manifest: manifest.bytes,
            manifest_media_type: manifest.media_type,
            manifest_digest: manifest.digest,
            index,
            config,
            layers,
        })
    }

    fn download_blobs(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        repository: &str,
        descriptors: &[Descriptor],
        blob_dir: &Path,
    ) -> Result<(), RegistryError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_err: Mutex<Option<RegistryError>> = Mutex::new(None);
        let workers = self.opts.parallel.clamp(1, descriptors.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(d) = descriptors.get(i) else { break };
                        if let Err(e) = self.download_blob(reg, scopes, repository, d, blob_dir) {
                            failed.store(true, Ordering::Relaxed);
                            first_err
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .get_or_insert(e);
                        }
                    }
                });
            }
        });
        match first_err
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Downloads one blob into `blob_dir`, retrying interrupted transfers.
    fn download_blob(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        repository: &str,
        desc: &Descriptor,
        blob_dir: &Path,
    ) -> Result<(), RegistryError> {
        let path = blob_path(blob_dir, &desc.digest);
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == desc.size) {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            match self.download_once(reg, scopes, repository, desc, &path) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() && attempt < self.opts.retries => {
                    std::thread::sleep(self.backoff(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn download_once(
        &self,
        reg: &RegistryState,
        scopes: &[String],
        repository: &str,
        desc: &Descriptor,
        path: &Path,
    ) -> Result<(), RegistryError> {
        let req = Req::new(
            "GET",
            format!("{}/v2/{repository}/blobs/{}", reg.base, desc.digest),
        );
        let resp = self.request(reg, scopes, &req, true)?;
        let mut resp = self.expect(reg, &req, resp, &[200])?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| RegistryError::io(format!("create {}", dir.display()), e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| {
            RegistryError::io(format!("create a temporary file in {}", dir.display()), e)
        })?;
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut buf = vec![0u8; 256 << 10];
        let mut reader = resp.body_mut().as_reader();
        loop {
            // A body cut short is a transport error, worth a retry.
            let n = reader
                .read(&mut buf)
                .map_err(|e| RegistryError::Transport {
                    method: "GET".into(),
                    url: req.url.clone(),
                    source: ureq::Error::Io(e),
                })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > desc.size {
                return Err(RegistryError::DigestMismatch {
                    what: format!("size of {}", req.url),
                    expected: desc.size.to_string(),
                    actual: format!("more than {}", desc.size),
                });
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(|e| RegistryError::io(format!("write {}", tmp.path().display()), e))?;
        }
        if total != desc.size {
            return Err(RegistryError::DigestMismatch {
                what: format!("size of {}", req.url),
                expected: desc.size.to_string(),
                actual: total.to_string(),
            });
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if digest != desc.digest {
            return Err(RegistryError::DigestMismatch {
                what: req.url.clone(),
                expected: desc.digest.clone(),
                actual: digest,
            });
        }
        tmp.persist(path)
            .map_err(|e| RegistryError::io(format!("rename to {}", path.display()), e.error))?;
        Ok(())
    }
}

/// Picks the manifest for `platform` from an index.
fn select_platform(
    index: &[u8],
    platform: &Platform,
    url: &str,
) -> Result<Descriptor, RegistryError> {
    let json: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| RegistryError::InvalidManifest {
            url: url.to_string(),
            reason: format!("not JSON: {e}"),
        })?;
    let manifests = json
        .get("manifests")
        .and_then(|m| m.as_array())
        .ok_or_else(|| RegistryError::InvalidManifest {
            url: url.to_string(),
            reason: "an index without a \"manifests\" list".into(),
        })?;
    let mut available = Vec::new();
    for entry in manifests {
        let p = entry.get("platform");
        let field = |k: &str| p.and_then(|p| p.get(k)).and_then(|v| v.as_str());
        let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
        if let (Some(os), Some(arch)) = (os, arch) {
            let mut name = format!("{os}/{arch}");
            if let Some(v) = variant {
                name.push('/');
                name.push_str(v);
            }
            available.push(name);
        }
        let variant_ok = match (&platform.variant, variant) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            // arm64 images often omit the (only) variant v8.
            (Some(want), None) => platform.architecture == "arm64" && want == "v8",
        };
        if os == Some(platform.os.as_str())
            && arch == Some(platform.architecture.as_str())
            && variant_ok
        {
            let desc: Descriptor = serde_json::from_value(entry.clone()).map_err(|e| {
                RegistryError::InvalidManifest {
                    url: url.to_string(),
                    reason: format!("bad descriptor for {platform}: {e}"),
                }
            })?;
            validate_digest(&desc.digest).map_err(|reason| RegistryError::InvalidManifest {
                url: url.to_string(),
                reason,
            })?;
            return Ok(desc);
        }
    }
    Err(RegistryError::PlatformNotFound {
        url: url.to_string(),
        platform: platform.to_string(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

/// The config and layer descriptors of an image manifest, digests validated.
fn parse_image_manifest(
    bytes: &[u8],
    url: &str,
) -> Result<(Descriptor, Vec<Descriptor>), RegistryError> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        config: Descriptor,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| RegistryError::InvalidManifest {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    for d in std::iter::once(&m.config).chain(&m.layers) {
        validate_digest(&d.digest).map_err(|reason| RegistryError::InvalidManifest {
            url: url.to_string(),
            reason,
        })?;
    }
    Ok((m.config, m.layers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MEDIA_TYPE_DOCKER_MANIFEST;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn selects_platform_from_index() -> Result<(), RegistryError> {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": d('a'), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": MEDIA_TYPE_DOCKER_MANIFEST, "digest": d('b'), "size": 2,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": d('c'), "size": 3,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            ]
        })
        .to_string();
        let pick = |p: Platform| select_platform(index.as_bytes(), &p, "x").map(|d| d.digest);
        assert_eq!(pick(Platform::new("linux", "amd64", None))?, d('b'));
        assert_eq!(pick(Platform::new("linux", "arm", Some("v7")))?, d('a'));
        assert_eq!(pick(Platform::new("linux", "arm64", None))?, d('c'));
        let err = pick(Platform::new("linux", "s390x", None)).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("linux/arm/v7, linux/amd64, linux/arm64/v8"),
            "{msg}"
        );
        Ok(())
    }

    #[test]
    fn rejects_path_traversal_digests() {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "x", "digest": "sha256:../../etc/passwd", "size": 1},
            "layers": []
        })
        .to_string();
        assert!(parse_image_manifest(m.as_bytes(), "x").is_err());
    }
}
