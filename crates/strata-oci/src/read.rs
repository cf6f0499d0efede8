//! Reading images back: an OCI image layout or a docker-archive. The one reader of these
//! formats: `strata inspect`, `strata run`, `strata push`/`copy` (through `strata-transport`)
//! and `strata check` (through `strata-coder`) all read images with it.
//!
//! Every digest read is a [`Digest`] (validated when parsed), the manifest and configuration
//! are verified against their digests, and docker-archive member names are checked to stay
//! inside the archive, so a crafted `index.json` or `manifest.json` can name no file outside
//! the image.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest as _;

use crate::compress::Compression;
use crate::digest::Digest;
use crate::image::{
    CONFIG_MEDIA_TYPE, Descriptor, ImageConfig, Index, MANIFEST_MEDIA_TYPE, Manifest, REF_NAME,
};
use crate::layer::LayerDigests;
use crate::output::{BuiltImage, LayerBlob};

/// One layer as read back.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    /// Digest of the blob (for a docker-archive, of the member as stored).
    pub digest: Digest,
    /// Uncompressed digest, from the configuration.
    pub diff_id: Digest,
    /// Blob size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// The store objects strata put in it (from the history comment).
    pub objects: Vec<String>,
}

/// An image as read back, for `strata inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// Names the image carries (ref name or repo tags).
    pub references: Vec<String>,
    /// Digest of the manifest (OCI layout only: a docker-archive has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<Digest>,
    /// Digest of the configuration.
    pub config_digest: Digest,
    /// The configuration.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerSummary>,
}

/// Where a layer's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSource {
    /// A blob file (of an OCI layout, or unpacked from an archive).
    File(PathBuf),
    /// A member of the docker-archive the image was read from, by name.
    Member(String),
}

/// One layer of an image read back.
#[derive(Debug, Clone)]
pub struct ReadLayer {
    /// Digest of the blob as stored.
    pub digest: Digest,
    /// Digest of the uncompressed tar (the configuration's `diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Media type (for a docker-archive: the OCI type its first bytes show).
    pub media_type: String,
    /// How the blob is compressed.
    pub compression: Compression,
    /// Where the bytes are.
    pub source: LayerSource,
}

/// An image read from an OCI layout or a docker-archive.
#[derive(Debug, Clone)]
pub struct ReadImage {
    /// Names the image carries (the layout's ref name, or the archive's repo tags).
    pub references: Vec<String>,
    /// Manifest bytes (for a docker-archive, an OCI manifest made for its layers).
    pub manifest: Vec<u8>,
    /// Manifest media type.
    pub manifest_media_type: String,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Whether the manifest was read (OCI layout) rather than made (docker-archive).
    pub manifest_stored: bool,
    /// Configuration bytes, as stored.
    pub config_bytes: Vec<u8>,
    /// The configuration, parsed.
    pub config: ImageConfig,
    /// Configuration digest.
    pub config_digest: Digest,
    /// The layers, bottom first.
    pub layers: Vec<ReadLayer>,
}

/// An image that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file could not be read.
    #[error("cannot read `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A JSON document is malformed (this includes a malformed digest in it).
    #[error("`{path}` is not a valid {what}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What it should be.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A blob's bytes do not have the digest that names it.
    #[error("`{path}` should have digest {expected} but has {actual}")]
    DigestMismatch {
        /// The blob.
        path: PathBuf,
        /// The digest naming it.
        expected: Digest,
        /// The digest of its bytes.
        actual: Digest,
    },
    /// The layout or archive is not a well-formed image, or does not hold the one requested.
    #[error("`{path}`: {message}")]
    Invalid {
        /// The layout or archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReadError {
    let path = path.to_owned();
    move |source| ReadError::Io { path, source }
}

fn invalid(path: &Path, message: impl Into<String>) -> ReadError {
    ReadError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<T, ReadError> {
    serde_json::from_slice(bytes).map_err(|source| ReadError::Json {
        path: path.to_owned(),
        what,
        source,
    })
}

/// How a layer of this media type is compressed.
pub fn compression_of(media_type: &str) -> Compression {
    if media_type.ends_with("gzip") {
        Compression::Gzip
    } else if media_type.ends_with("zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Reads a blob of the layout at `dir` and checks its digest.
fn read_blob(dir: &Path, digest: &Digest) -> Result<(Vec<u8>, PathBuf), ReadError> {
    let path = digest.blob_path(dir);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    if !digest.matches(&bytes) {
        return Err(ReadError::DigestMismatch {
            path,
            expected: digest.clone(),
            actual: Digest::sha256(&bytes),
        });
    }
    Ok((bytes, path))
}

/// Reads the image named `tag` (or the only image) of the OCI layout at `dir`.
pub fn read_oci_layout(dir: &Path, tag: Option<&str>) -> Result<ReadImage, ReadError> {
    let index_path = dir.join("index.json");
    let index: Index = json(
        &fs::read(&index_path).map_err(io_err(&index_path))?,
        &index_path,
        "OCI image index",
    )?;
    let chosen = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag)),
        None if index.manifests.len() == 1 => index.manifests.first(),
        None => None,
    };
    let Some(desc) = chosen else {
        let names: Vec<&str> = index
            .manifests
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
            .collect();
        let wanted = tag.map_or_else(|| "none by default".to_owned(), |t| format!("none `{t}`"));
        return Err(invalid(
            dir,
            format!(
                "holds {} image(s) ({}) and {wanted}; name one as oci:DIR:TAG",
                index.manifests.len(),
                names.join(", ")
            ),
        ));
    };
    let (manifest_bytes, manifest_path) = read_blob(dir, &desc.digest)?;
    let manifest: Manifest = json(&manifest_bytes, &manifest_path, "OCI image manifest")?;
    let (config_bytes, config_path) = read_blob(dir, &manifest.config.digest)?;
    let config: ImageConfig = json(&config_bytes, &config_path, "OCI image configuration")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(invalid(
            dir,
            format!(
                "the manifest has {} layers but the configuration {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(l, diff_id)| ReadLayer {
            digest: l.digest.clone(),
            diff_id: diff_id.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
            compression: compression_of(&l.media_type),
            source: LayerSource::File(l.digest.blob_path(dir)),
        })
        .collect();
    Ok(ReadImage {
        references: desc
            .annotations
            .get(REF_NAME)
            .cloned()
            .into_iter()
            .collect(),
        manifest: manifest_bytes,
        manifest_media_type: desc.media_type.clone(),
        manifest_digest: desc.digest.clone(),
        manifest_stored: true,
        config_digest: manifest.config.digest.clone(),
        config_bytes,
        config,
        layers,
    })
}

/// The name of a docker-archive member as the archive's own documents name it: relative,
/// without `./`, and refused when it would leave the archive.
fn member_key(name: &str, archive: &Path) -> Result<String, ReadError> {
    let key = name.trim_start_matches("./");
    if key.is_empty() || key.starts_with('/') || key.split('/').any(|c| c == "..") {
        return Err(invalid(
            archive,
            format!("names a member outside the archive: {name:?}"),
        ));
    }
    Ok(key.to_owned())
}

/// A member name with `.` and `dir/..` folded (`..` above the top is dropped: such a target
/// names nothing in the archive).
fn normalise_member(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Digest, size and first bytes of a member, measured while it streams past.
struct Measured {
    digest: Digest,
    size: u64,
    magic: [u8; 4],
}

fn measure(mut r: impl Read, path: &Path) -> Result<Measured, ReadError> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut magic = [0u8; 4];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        if size < 4 {
            let at = size as usize;
            let k = n.min(4 - at);
            magic[at..at + k].copy_from_slice(&buf[..k]);
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Measured {
        digest: Digest::from_sha256(h.finalize().into()),
        size,
        magic,
    })
}

/// Reads the first image of a docker-archive (`docker save` output) in one pass: its
/// `manifest.json` and configuration, and each layer member's digest, size and compression
/// (from its first bytes). Layers stay in the archive ([`LayerSource::Member`]); use
/// [`unpack_docker_archive`] to get them as files.
pub fn read_docker_archive(path: &Path) -> Result<ReadImage, ReadError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut measured: BTreeMap<String, Measured> = BTreeMap::new();
    // Members that are links to another member (docker stores a layer shared by two images
    // once and links it): name → target, both as archive member names.
    let mut links: Vec<(String, String)> = Vec::new();
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        let name = entry
            .path()
            .map_err(io_err(path))?
            .to_string_lossy()
            .into_owned();
        let name = name.trim_start_matches("./").to_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(io_err(path))? {
                let target = target.to_string_lossy().into_owned();
                let target = match name.rsplit_once('/') {
                    // A symbolic link's target is relative to the link's directory.
                    Some((dir, _)) if kind.is_symlink() && !target.starts_with('/') => {
                        format!("{dir}/{target}")
                    }
                    _ => target,
                };
                links.push((name, normalise_member(&target)));
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        // JSON documents are small; anything else may be a layer and is only measured.
        if name.ends_with(".json") && entry.size() < (64 << 20) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io_err(path))?;
            measured.insert(
                name.clone(),
                Measured {
                    digest: Digest::sha256(&bytes),
                    size: bytes.len() as u64,
                    magic: [0; 4],
                },
            );
            small.insert(name, bytes);
        } else {
            measured.insert(name, measure(&mut entry, path)?);
        }
    }
    for (name, target) in links {
        if let Some(m) = measured.get(&target) {
            let copy = Measured {
                digest: m.digest.clone(),
                size: m.size,
                magic: m.magic,
            };
            measured.insert(name, copy);
        }
    }
    let manifest_bytes = small
        .get("manifest.json")
        .ok_or_else(|| invalid(path, "has no manifest.json: not a docker-archive"))?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Vec<String>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = json(manifest_bytes, path, "docker-archive manifest.json")?;
    let first = entries
        .into_iter()
        .next()
        .ok_or_else(|| invalid(path, "holds no image (manifest.json is empty)"))?;
    let config_key = member_key(&first.config, path)?;
    let config_bytes = small
        .get(&config_key)
        .ok_or_else(|| invalid(path, format!("lacks its configuration `{}`", first.config)))?
        .clone();
    let config: ImageConfig = json(&config_bytes, path, "image configuration")?;
    if config.rootfs.diff_ids.len() != first.layers.len() {
        return Err(invalid(
            path,
            format!(
                "manifest.json names {} layers but the configuration has {} diff_ids",
                first.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (name, diff_id) in first.layers.iter().zip(&config.rootfs.diff_ids) {
        let key = member_key(name, path)?;
        let m = measured.get(&key).ok_or_else(|| {
            invalid(
                path,
                format!("layer `{name}` named in manifest.json is not in the archive"),
            )
        })?;
        let compression = Compression::sniff(&m.magic);
        layers.push(ReadLayer {
            digest: m.digest.clone(),
            diff_id: diff_id.clone(),
            size: m.size,
            media_type: compression.media_type().to_owned(),
            compression,
            source: LayerSource::Member(key),
        });
    }
    let config_digest = Digest::sha256(&config_bytes);
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            annotations: Default::default(),
            platform: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                annotations: Default::default(),
                platform: None,
            })
            .collect(),
        annotations: Default::default(),
    };
    let (manifest, manifest_digest) = crate::image::to_blob(&manifest);
    Ok(ReadImage {
        references: first.repo_tags,
        manifest,
        manifest_media_type: MANIFEST_MEDIA_TYPE.into(),
        manifest_digest,
        manifest_stored: false,
        config_bytes,
        config,
        config_digest,
        layers,
    })
}

/// Reads a docker-archive as [`read_docker_archive`] does, then copies its layers into `dir`
/// as `dir/blobs/sha256/HEX` files ([`LayerSource::File`]), each checked against the digest the
/// first pass measured.
pub fn unpack_docker_archive(path: &Path, dir: &Path) -> Result<ReadImage, ReadError> {
    let mut image = read_docker_archive(path)?;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    let mut wanted: BTreeMap<String, Digest> = BTreeMap::new();
    for l in &image.layers {
        if let LayerSource::Member(name) = &l.source {
            wanted.insert(name.clone(), l.digest.clone());
        }
    }
    let file = File::open(path).map_err(io_err(path))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        let name = entry
            .path()
            .map_err(io_err(path))?
            .to_string_lossy()
            .into_owned();
        // Links carry no data; their target's blob is the one written.
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Some(digest) = wanted.remove(name.trim_start_matches("./")) else {
            continue;
        };
        let target = digest.blob_path(dir);
        let mut out = File::create(&target).map_err(io_err(&target))?;
        let mut hashing = HashingReader {
            inner: &mut entry,
            hasher: sha2::Sha256::new(),
        };
        io::copy(&mut hashing, &mut out).map_err(io_err(&target))?;
        let actual = Digest::from_sha256(hashing.hasher.finalize().into());
        if actual != digest {
            return Err(ReadError::DigestMismatch {
                path: path.to_owned(),
                expected: digest,
                actual,
            });
        }
    }
    // Linked members share their target's blob, written under the same digest.
    wanted.retain(|_, digest| !digest.blob_path(dir).is_file());
    if let Some(name) = wanted.keys().next() {
        return Err(invalid(
            path,
            format!("layer `{name}` vanished while reading"),
        ));
    }
    for l in &mut image.layers {
        l.source = LayerSource::File(l.digest.blob_path(dir));
    }
    Ok(image)
}

struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl ReadImage {
    /// What `strata inspect` shows: names, digests, configuration, layers with their objects.
    pub fn summary(&self) -> ImageSummary {
        let objects = objects_by_layer(&self.config);
        ImageSummary {
            references: self.references.clone(),
            manifest_digest: self.manifest_stored.then(|| self.manifest_digest.clone()),
            config_digest: self.config_digest.clone(),
            config: self.config.clone(),
            layers: self
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| LayerSummary {
                    digest: l.digest.clone(),
                    diff_id: l.diff_id.clone(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                    objects: objects.get(i).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The image as the writers take it, named `name:tag`. Fails when a layer is still a
    /// member of an archive (unpack it first).
    pub fn into_built(self, name: String, tag: String) -> Result<BuiltImage, ReadError> {
        let mut layers = Vec::new();
        for l in self.layers {
            let LayerSource::File(path) = l.source else {
                return Err(invalid(
                    Path::new("<archive>"),
                    "layers must be unpacked before the image is written",
                ));
            };
            layers.push(LayerBlob {
                path,
                digests: LayerDigests {
                    diff_id: l.diff_id,
                    digest: l.digest,
                    size: l.size,
                    // Unknown until decompressed; writers that need it measure it.
                    uncompressed_size: if l.compression == Compression::None {
                        l.size
                    } else {
                        0
                    },
                },
                compression: l.compression,
                media_type: l.media_type,
            });
        }
        Ok(BuiltImage {
            manifest: self.manifest,
            manifest_media_type: self.manifest_media_type,
            manifest_digest: self.manifest_digest,
            config: self.config_bytes,
            config_digest: self.config_digest,
            layers,
            name,
            tag,
        })
    }
}

/// strata writes the store objects of each layer into its history comment.
fn objects_by_layer(config: &ImageConfig) -> Vec<Vec<String>> {
    config
        .history
        .iter()
        .map(|h| match (&h.created_by, &h.comment) {
            (Some(by), Some(c)) if by.starts_with("strata") => {
                c.split_whitespace().map(str::to_owned).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).expect("append");
    }

    /// An archive whose second layer is a symbolic link to the first (as `docker save` writes a
    /// layer two images share), and whose layers are empty tars.
    fn archive_with_linked_layer(dir: &Path) -> PathBuf {
        let layer = vec![0u8; 1024];
        let diff_id = Digest::sha256(&layer);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string(), diff_id.to_string()]},
        });
        let config = serde_json::to_vec(&config).expect("json");
        let manifest = serde_json::json!([{
            "Config": "config.json", "RepoTags": ["x:1"],
            "Layers": ["a/layer.tar", "b/layer.tar"],
        }]);
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "config.json", &config);
        append(&mut b, "a/layer.tar", &layer);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "b/layer.tar", "../a/layer.tar")
            .expect("link");
        append(
            &mut b,
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        );
        let path = dir.join("image.tar");
        fs::write(&path, b.into_inner().expect("tar")).expect("write");
        path
    }

    /// A layout whose index names a manifest blob that is not there: the error names the blob
    /// file, and its message does not repeat the OS error (that is its source).
    #[test]
    fn oci_layout_with_a_missing_blob_names_the_blob_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let digest = Digest::sha256(b"no such manifest");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest.to_string(),
                "size": 16,
            }],
        });
        fs::write(
            dir.path().join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("write");
        let err = read_oci_layout(dir.path(), None).expect_err("missing blob");
        let blob = digest.blob_path(dir.path());
        assert!(
            matches!(&err, ReadError::Io { path, source }
                if *path == blob && source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        let message = err.to_string();
        assert_eq!(message, format!("cannot read `{}`", blob.display()));
        assert!(!message.contains("os error"), "{message}");
    }

    #[test]
    fn docker_archive_with_a_linked_layer_reads_and_unpacks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = archive_with_linked_layer(dir.path());
        let image = read_docker_archive(&path).expect("read");
        assert_eq!(image.layers.len(), 2);
        assert_eq!(image.layers[0].digest, image.layers[1].digest);
        assert_eq!(image.layers[1].size, 1024);
        assert_eq!(image.references, ["x:1"]);
        let unpacked = unpack_docker_archive(&path, &dir.path().join("out")).expect("unpack");
        for l in &unpacked.layers {
            let LayerSource::File(file) = &l.source else {
                panic!("not unpacked: {l:?}");
            };
            assert!(l.digest.matches(&fs::read(file).expect("read")));
        }
    }
}
