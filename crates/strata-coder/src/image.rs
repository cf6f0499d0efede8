//! Opening an image's files without a container engine: an OCI image layout, a docker-archive,
//! or an image strata just built.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use strata_oci::image::ImageConfig;
use strata_oci::output::BuiltImage;
use strata_oci::read::LayerSource;

use crate::index::{FileIndex, IndexError};

/// An image's configuration and the file index of its root file system.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    /// The image configuration (user, environment, architecture).
    pub config: ImageConfig,
    /// Every path of the root file system the layers make.
    pub files: FileIndex,
}

/// An image that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The OCI layout or docker-archive is unreadable or malformed.
    #[error(transparent)]
    Read(#[from] strata_oci::read::ReadError),
    /// A layer is unreadable.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A file could not be read.
    #[error("cannot read `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A JSON document in the image is malformed.
    #[error("`{path}`: {what} is not valid")]
    Json {
        /// The file holding it.
        path: PathBuf,
        /// Which document.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The archive lacks something it must have.
    #[error("`{path}`: {message}")]
    Missing {
        /// The archive.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
}

/// Reads the image named `tag` (or the only image) of the OCI layout at `dir`.
pub fn open_oci_layout(dir: &Path, tag: Option<&str>) -> Result<ImageFiles, OpenError> {
    let image = strata_oci::read::read_oci_layout(dir, tag)?;
    let mut files = FileIndex::new();
    for layer in &image.layers {
        if let LayerSource::File(path) = &layer.source {
            files.apply_layer_file(path)?;
        }
    }
    Ok(ImageFiles {
        config: image.config,
        files,
    })
}

/// Reads an image strata has just built (its blobs in the store).
pub fn open_built(image: &BuiltImage) -> Result<ImageFiles, OpenError> {
    let config: ImageConfig =
        serde_json::from_slice(&image.config).map_err(|source| OpenError::Json {
            path: PathBuf::from(image.reference()),
            what: "the image configuration",
            source,
        })?;
    let mut files = FileIndex::new();
    for layer in &image.layers {
        files.apply_layer_file(&layer.path)?;
    }
    Ok(ImageFiles { config, files })
}

/// Reads the first image of a docker-archive (`docker save` output). Layers may be stored in
/// any order and compressed or not; out-of-order layers are spilled to temporary files.
pub fn open_docker_archive(path: &Path) -> Result<ImageFiles, OpenError> {
    let io_err = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    // Pass 1 (the shared reader): manifest.json, the configuration, the layer member names.
    let image = strata_oci::read::read_docker_archive(path)?;
    let names: Vec<&str> = image
        .layers
        .iter()
        .map(|l| match &l.source {
            LayerSource::Member(name) => name.as_str(),
            LayerSource::File(_) => "",
        })
        .collect();

    // Pass 2: the layers, applied in manifest order.
    let spill_dir = tempfile::Builder::new()
        .prefix("strata-check-")
        .tempdir()
        .map_err(|source| OpenError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let mut spilled: BTreeMap<usize, PathBuf> = BTreeMap::new();
    let mut next = 0usize;
    let mut files = FileIndex::new();
    let layer_err = |source| {
        OpenError::Index(IndexError::Layer {
            path: path.to_owned(),
            source,
        })
    };
    let file = File::open(path).map_err(io_err)?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let name = entry.path().map_err(io_err)?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./");
        let positions: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(i, l)| **l == name && *i >= next)
            .map(|(i, _)| i)
            .collect();
        let Some(&first) = positions.first() else {
            continue;
        };
        if first == next && positions.len() == 1 {
            files
                .apply_layer_stream(BufReader::with_capacity(1 << 20, &mut entry))
                .map_err(layer_err)?;
            next += 1;
        } else {
            let spill = spill_dir.path().join(format!("layer-{first}"));
            let mut out = File::create(&spill).map_err(|source| OpenError::Io {
                path: spill.clone(),
                source,
            })?;
            io::copy(&mut entry, &mut out).map_err(io_err)?;
            for p in positions {
                spilled.insert(p, spill.clone());
            }
        }
        while let Some(p) = spilled.remove(&next) {
            files.apply_layer_file(&p)?;
            next += 1;
        }
    }
    if next != names.len() {
        return Err(OpenError::Missing {
            path: path.to_owned(),
            message: format!(
                "layer `{}` named in manifest.json is not in the archive",
                names[next]
            ),
        });
    }
    Ok(ImageFiles {
        config: image.config,
        files,
    })
}
