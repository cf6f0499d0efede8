use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use strata_oci::compress::Compression;
use strata_oci::image::{
    self, Descriptor, ImageConfig, Index, MANIFEST_MEDIA_TYPE, Manifest, REF_NAME,
};
use strata_oci::layer::LayerDigests;
use strata_oci::output::{BuiltImage, LayerBlob};
use strata_registry::{Client, Platform};

use crate::{Transport, TransportError};

/// An image read from a transport. Its blobs may live in a temporary directory, which lives as
/// long as this value.
#[derive(Debug)]
pub struct OpenedImage {
    /// The image.
    pub image: BuiltImage,
    _scratch: Option<tempfile::TempDir>,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TransportError {
    let path = path.to_owned();
    move |source| TransportError::Io {
        action,
        path,
        source,
    }
}

/// Reads the image at `source`. Registry images are pulled (blobs verified) into a temporary
/// directory under `scratch`; docker-archives are unpacked there.
pub fn open(
    source: &Transport,
    client: Option<&Client>,
    platform: &Platform,
    scratch: &Path,
) -> Result<OpenedImage, TransportError> {
    match source {
        Transport::Oci(dir, tag) => Ok(OpenedImage {
            image: open_oci(dir, tag.as_deref())?,
            _scratch: None,
        }),
        Transport::DockerArchive(file) => {
            let temp = temp_dir(scratch)?;
            let image = open_docker_archive(file, temp.path())?;
            Ok(OpenedImage {
                image,
                _scratch: Some(temp),
            })
        }
        Transport::Registry(reference) => {
            let client = client
                .ok_or_else(|| TransportError::Invalid("pulling needs a registry client".into()))?;
            let temp = temp_dir(scratch)?;
            let pulled = client.pull(reference, platform, temp.path())?;
            let blob = |digest: &str| blob_path(temp.path(), digest);
            let config_path = blob(&pulled.config.digest);
            let config = fs::read(&config_path).map_err(io_err("read", &config_path))?;
            let diff_ids = diff_ids(&config, &config_path)?;
            let layers = pulled
                .layers
                .iter()
                .zip(diff_ids)
                .map(|(d, diff_id)| {
                    layer_blob(blob(&d.digest), &d.media_type, &d.digest, d.size, diff_id)
                })
                .collect();
            let image = BuiltImage {
                manifest: pulled.manifest,
                manifest_media_type: pulled.manifest_media_type,
                manifest_digest: pulled.manifest_digest,
                config_digest: pulled.config.digest.clone(),
                config,
                layers,
                name: format!("{}/{}", reference.registry, reference.repository),
                tag: reference.tag.clone().unwrap_or_else(|| "latest".into()),
            };
            Ok(OpenedImage {
                image,
                _scratch: Some(temp),
            })
        }
        Transport::Stdout => Err(TransportError::Invalid(
            "`-` is an output only; read images from oci:, docker-archive: or docker://".into(),
        )),
    }
}

fn temp_dir(scratch: &Path) -> Result<tempfile::TempDir, TransportError> {
    fs::create_dir_all(scratch).map_err(io_err("create", scratch))?;
    tempfile::Builder::new()
        .prefix("image-")
        .tempdir_in(scratch)
        .map_err(io_err("create a temporary directory in", scratch))
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap_or(digest))
}

fn compression_of(media_type: &str) -> Compression {
    if media_type.ends_with("gzip") {
        Compression::Gzip
    } else if media_type.ends_with("zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn layer_blob(
    path: PathBuf,
    media_type: &str,
    digest: &str,
    size: u64,
    diff_id: String,
) -> LayerBlob {
    let compression = compression_of(media_type);
    LayerBlob {
        path,
        digests: LayerDigests {
            diff_id,
            digest: digest.to_owned(),
            size,
            // Unknown until decompressed; writers that need it measure it.
            uncompressed_size: if compression == Compression::None {
                size
            } else {
                0
            },
        },
        compression,
        media_type: media_type.to_owned(),
    }
}

fn diff_ids(config: &[u8], path: &Path) -> Result<Vec<String>, TransportError> {
    let parsed: ImageConfig = serde_json::from_slice(config).map_err(|e| {
        TransportError::Invalid(format!(
            "`{}` is not an image configuration: {e}",
            path.display()
        ))
    })?;
    Ok(parsed.rootfs.diff_ids)
}

fn open_oci(dir: &Path, tag: Option<&str>) -> Result<BuiltImage, TransportError> {
    let index_path = dir.join("index.json");
    let bytes = fs::read(&index_path).map_err(io_err("read", &index_path))?;
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
        TransportError::Invalid(format!(
            "`{}` is not an OCI index: {e}",
            index_path.display()
        ))
    })?;
    let chosen: Option<&Descriptor> = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag)),
        None if index.manifests.len() == 1 => index.manifests.first(),
        None => None,
    };
    let desc = chosen.ok_or_else(|| {
        TransportError::Invalid(format!(
            "`{}` holds {} image(s) and none {}; name one as oci:DIR:TAG",
            dir.display(),
            index.manifests.len(),
            tag.map(|t| format!("tagged `{t}`"))
                .unwrap_or_else(|| "by default".into())
        ))
    })?;
    let manifest_path = blob_path(dir, &desc.digest);
    let manifest_bytes = fs::read(&manifest_path).map_err(io_err("read", &manifest_path))?;
    verify(&manifest_bytes, &desc.digest, &manifest_path)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        TransportError::Invalid(format!(
            "`{}` is not a manifest: {e}",
            manifest_path.display()
        ))
    })?;
    let config_path = blob_path(dir, &manifest.config.digest);
    let config = fs::read(&config_path).map_err(io_err("read", &config_path))?;
    verify(&config, &manifest.config.digest, &config_path)?;
    let ids = diff_ids(&config, &config_path)?;
    if ids.len() != manifest.layers.len() {
        return Err(TransportError::Invalid(format!(
            "`{}`: the manifest has {} layers but the configuration {} diff_ids",
            dir.display(),
            manifest.layers.len(),
            ids.len()
        )));
    }
    let layers = manifest
        .layers
        .iter()
        .zip(ids)
        .map(|(l, diff_id)| {
            layer_blob(
                blob_path(dir, &l.digest),
                &l.media_type,
                &l.digest,
                l.size,
                diff_id,
            )
        })
        .collect();
    Ok(BuiltImage {
        manifest: manifest_bytes,
        manifest_media_type: desc.media_type.clone(),
        manifest_digest: desc.digest.clone(),
        config_digest: manifest.config.digest.clone(),
        config,
        layers,
        name: "strata/imported".into(),
        tag: desc
            .annotations
            .get(REF_NAME)
            .cloned()
            .unwrap_or_else(|| "latest".into()),
    })
}

fn verify(bytes: &[u8], digest: &str, path: &Path) -> Result<(), TransportError> {
    let actual = image::sha256_digest(bytes);
    if actual != digest {
        return Err(TransportError::Invalid(format!(
            "`{}` should have digest {digest} but has {actual}",
            path.display()
        )));
    }
    Ok(())
}

/// Unpacks a docker-archive and describes it as an OCI image whose layers are the archive's
/// layer files as they are (uncompressed tars, usually).
fn open_docker_archive(file: &Path, dir: &Path) -> Result<BuiltImage, TransportError> {
    let f = File::open(file).map_err(io_err("open", file))?;
    // `unpack_in` refuses members that would land outside `dir`.
    let mut archive = tar::Archive::new(BufReader::new(f));
    for entry in archive.entries().map_err(io_err("read", file))? {
        let mut entry = entry.map_err(io_err("read", file))?;
        entry.unpack_in(dir).map_err(io_err("unpack", file))?;
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Vec<String>,
        layers: Vec<String>,
    }
    let manifest_path = dir.join("manifest.json");
    let bytes = fs::read(&manifest_path).map_err(io_err("read", &manifest_path))?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| {
        TransportError::Invalid(format!("`{}`: bad manifest.json: {e}", file.display()))
    })?;
    let first = entries
        .into_iter()
        .next()
        .ok_or_else(|| TransportError::Invalid(format!("`{}` holds no image", file.display())))?;
    let member = |name: &str| -> Result<PathBuf, TransportError> {
        if name.split('/').any(|c| c == "..") || name.starts_with('/') {
            return Err(TransportError::Invalid(format!(
                "`{}` names a member outside the archive: {name}",
                file.display()
            )));
        }
        Ok(dir.join(name))
    };
    let config_path = member(&first.config)?;
    let config = fs::read(&config_path).map_err(io_err("read", &config_path))?;
    let ids = diff_ids(&config, &config_path)?;
    let mut layers = Vec::new();
    for (name, diff_id) in first.layers.iter().zip(ids) {
        let path = member(name)?;
        let (digest, size, magic) = hash_file(&path)?;
        let media_type = match magic {
            [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
            [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.oci.image.layer.v1.tar",
        };
        layers.push(layer_blob(path, media_type, &digest, size, diff_id));
    }
    let config_digest = image::sha256_digest(&config);
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        config: Descriptor {
            media_type: image::CONFIG_MEDIA_TYPE.into(),
            digest: config_digest.clone(),
            size: config.len() as u64,
            annotations: Default::default(),
            platform: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digests.digest.clone(),
                size: l.digests.size,
                annotations: Default::default(),
                platform: None,
            })
            .collect(),
        annotations: Default::default(),
    };
    let (manifest_bytes, manifest_digest) = image::to_blob(&manifest);
    let (name, tag) = first
        .repo_tags
        .first()
        .and_then(|r| r.rsplit_once(':').filter(|(_, t)| !t.contains('/')))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .unwrap_or_else(|| ("strata/imported".into(), "latest".into()));
    Ok(BuiltImage {
        manifest: manifest_bytes,
        manifest_media_type: MANIFEST_MEDIA_TYPE.into(),
        manifest_digest,
        config_digest,
        config,
        layers,
        name,
        tag,
    })
}

/// sha256 digest, size and first four bytes of a file.
fn hash_file(path: &Path) -> Result<(String, u64, [u8; 4]), TransportError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut magic = [0u8; 4];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        if size == 0 {
            let k = n.min(4);
            magic[..k].copy_from_slice(&buf[..k]);
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), size, magic))
}
