//! Reading images back: an OCI image layout or a docker-archive, for `strata inspect`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::image::{ImageConfig, Index, Manifest, REF_NAME, sha256_digest};

/// One layer as read back.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    /// Digest of the blob (for a docker-archive, of the uncompressed tar as stored).
    pub digest: String,
    /// Uncompressed digest, from the configuration.
    pub diff_id: String,
    /// Blob size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// The store objects strata put in it (from the history comment).
    pub objects: Vec<String>,
}

/// An image as read back.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    /// Names the image carries (ref name or repo tags).
    pub references: Vec<String>,
    /// Digest of the manifest (OCI layout only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Digest of the configuration.
    pub config_digest: String,
    /// The configuration.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerSummary>,
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
    /// A JSON document is malformed.
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
    /// The layout or archive does not hold the requested image.
    #[error("{0}")]
    Missing(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ReadError {
    let path = path.to_owned();
    move |source| ReadError::Io { path, source }
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

/// Reads the image named `tag` (or the only image) of the OCI layout at `dir`.
pub fn read_oci_layout(dir: &Path, tag: Option<&str>) -> Result<ImageSummary, ReadError> {
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
        return Err(ReadError::Missing(format!(
            "`{}` holds {} image(s) ({}); name one as oci:DIR:TAG",
            dir.display(),
            index.manifests.len(),
            names.join(", ")
        )));
    };
    let blob = |digest: &str| -> Result<(Vec<u8>, PathBuf), ReadError> {
        let path = dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap_or(digest));
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        Ok((bytes, path))
    };
    let (manifest_bytes, manifest_path) = blob(&desc.digest)?;
    let manifest: Manifest = json(&manifest_bytes, &manifest_path, "OCI image manifest")?;
    let (config_bytes, config_path) = blob(&manifest.config.digest)?;
    let config: ImageConfig = json(&config_bytes, &config_path, "OCI image configuration")?;
    let objects = objects_by_layer(&config);
    let layers = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerSummary {
            digest: l.digest.clone(),
            diff_id: config.rootfs.diff_ids.get(i).cloned().unwrap_or_default(),
            size: l.size,
            media_type: l.media_type.clone(),
            objects: objects.get(i).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(ImageSummary {
        references: desc
            .annotations
            .get(REF_NAME)
            .cloned()
            .into_iter()
            .collect(),
        manifest_digest: Some(desc.digest.clone()),
        config_digest: manifest.config.digest.clone(),
        config,
        layers,
    })
}

/// Reads the first image of a docker-archive file.
pub fn read_docker_archive(path: &Path) -> Result<ImageSummary, ReadError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        let name = entry
            .path()
            .map_err(io_err(path))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        sizes.insert(name.clone(), entry.size());
        // Only the small JSON members are kept in memory; layers are just measured.
        if name.ends_with(".json") || !name.contains('/') {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io_err(path))?;
            members.insert(name, bytes);
        }
    }
    let manifest_bytes = members
        .get("manifest.json")
        .ok_or_else(|| ReadError::Missing(format!("`{}` has no manifest.json", path.display())))?;
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
        .ok_or_else(|| ReadError::Missing(format!("`{}` holds no image", path.display())))?;
    let config_bytes = members.get(&first.config).ok_or_else(|| {
        ReadError::Missing(format!(
            "`{}` lacks its config {}",
            path.display(),
            first.config
        ))
    })?;
    let config: ImageConfig = json(config_bytes, path, "OCI image configuration")?;
    let objects = objects_by_layer(&config);
    let layers = first
        .layers
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let diff_id = config.rootfs.diff_ids.get(i).cloned().unwrap_or_default();
            LayerSummary {
                digest: diff_id.clone(),
                diff_id,
                size: sizes.get(name).copied().unwrap_or(0),
                media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
                objects: objects.get(i).cloned().unwrap_or_default(),
            }
        })
        .collect();
    Ok(ImageSummary {
        references: first.repo_tags,
        manifest_digest: None,
        config_digest: sha256_digest(config_bytes),
        config,
        layers,
    })
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
