use std::fs;
use std::io;
use std::path::Path;

use strata_oci::Digest;
use strata_oci::image::ImageConfig;
use strata_oci::layer::LayerDigests;
use strata_oci::output::{BuiltImage, LayerBlob};
use strata_oci::read::{self, compression_of};
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

/// Reads the image at `source`. Local images are read with `strata_oci::read` (digests
/// validated, manifest and configuration verified); docker-archives are unpacked into a
/// temporary directory under `scratch`. Registry images are pulled (blobs verified) there too.
pub fn open(
    source: &Transport,
    client: Option<&Client>,
    platform: &Platform,
    scratch: &Path,
) -> Result<OpenedImage, TransportError> {
    match source {
        Transport::Oci(dir, tag) => {
            let image = read::read_oci_layout(dir, tag.as_deref())?;
            let tag = image
                .references
                .first()
                .cloned()
                .unwrap_or_else(|| "latest".into());
            Ok(OpenedImage {
                image: image.into_built("strata/imported".into(), tag)?,
                _scratch: None,
            })
        }
        Transport::DockerArchive(file) => {
            let temp = temp_dir(scratch)?;
            let image = read::unpack_docker_archive(file, temp.path())?;
            let (name, tag) = image
                .references
                .first()
                .and_then(|r| r.rsplit_once(':').filter(|(_, t)| !t.contains('/')))
                .map(|(n, t)| (n.to_owned(), t.to_owned()))
                .unwrap_or_else(|| ("strata/imported".into(), "latest".into()));
            Ok(OpenedImage {
                image: image.into_built(name, tag)?,
                _scratch: Some(temp),
            })
        }
        Transport::Registry(reference) => {
            let client = client
                .ok_or_else(|| TransportError::Invalid("pulling needs a registry client".into()))?;
            let temp = temp_dir(scratch)?;
            let pulled = client.pull(reference, platform, temp.path())?;
            let config_digest = Digest::parse(&pulled.config.digest)?;
            let config_path = config_digest.blob_path(temp.path());
            let config = fs::read(&config_path).map_err(io_err("read", &config_path))?;
            let parsed: ImageConfig = serde_json::from_slice(&config).map_err(|e| {
                TransportError::Invalid(format!(
                    "`{}` is not an image configuration: {e}",
                    config_path.display()
                ))
            })?;
            if parsed.rootfs.diff_ids.len() != pulled.layers.len() {
                return Err(TransportError::Invalid(format!(
                    "docker://{reference}: the manifest has {} layers but the configuration {} diff_ids",
                    pulled.layers.len(),
                    parsed.rootfs.diff_ids.len()
                )));
            }
            let mut layers = Vec::new();
            for (d, diff_id) in pulled.layers.iter().zip(parsed.rootfs.diff_ids) {
                let digest = Digest::parse(&d.digest)?;
                let compression = compression_of(&d.media_type);
                layers.push(LayerBlob {
                    path: digest.blob_path(temp.path()),
                    digests: LayerDigests {
                        diff_id,
                        digest,
                        size: d.size,
                        // Unknown until decompressed; writers that need it measure it.
                        uncompressed_size: if compression == strata_oci::compress::Compression::None
                        {
                            d.size
                        } else {
                            0
                        },
                    },
                    compression,
                    media_type: d.media_type.clone(),
                });
            }
            let image = BuiltImage {
                manifest: pulled.manifest,
                manifest_media_type: pulled.manifest_media_type,
                manifest_digest: Digest::parse(&pulled.manifest_digest)?,
                config_digest,
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
        Transport::Disk(format, _) => Err(TransportError::Invalid(format!(
            "`{source}`: {}: is an output only (a disk image strata builds from a spec with \
             [boot]); read images from oci:, docker-archive: or docker://",
            format.name()
        ))),
    }
}

fn temp_dir(scratch: &Path) -> Result<tempfile::TempDir, TransportError> {
    fs::create_dir_all(scratch).map_err(io_err("create", scratch))?;
    tempfile::Builder::new()
        .prefix("image-")
        .tempdir_in(scratch)
        .map_err(io_err("create a temporary directory in", scratch))
}
