//! Image locations in skopeo's transport syntax, and moving images between them.
//!
//! - `oci:DIR[:TAG]`: an OCI image layout directory.
//! - `docker-archive:FILE`: a `docker save` tarball.
//! - `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`: a repository in an OCI registry.
//! - `-`: a docker-archive on stdout (write only).
//! - `raw:FILE`, `qcow2:FILE`, `iso:FILE`: a bootable disk image or live ISO of the image (write only, for specs with
//!   `[boot]`; written by `strata-vm`, not by [`write`]).
//!
//! Any image read from one of them is a [`BuiltImage`] whose blobs are files (in the layout,
//! in the store, or in a temporary directory kept by [`OpenedImage`]), so every destination
//! writer works from any source.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

mod open;

pub use open::{OpenedImage, open};

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use strata_oci::output::{
    BuiltImage, write_docker_archive, write_docker_archive_file, write_oci_layout,
};
use strata_registry::{Blob, Client, PushImage, PushReport, Reference, Reporter};

/// Where an image is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `oci:DIR[:TAG]`.
    Oci(PathBuf, Option<String>),
    /// `docker-archive:FILE`.
    DockerArchive(PathBuf),
    /// `docker://REFERENCE`.
    Registry(Reference),
    /// `-`: a docker-archive on stdout.
    Stdout,
    /// `raw:FILE`, `qcow2:FILE` or `iso:FILE`: a bootable disk image (write only).
    Disk(DiskFormat, PathBuf),
}

/// The format of a disk image output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// `raw:`: the disk's bytes (sparse where zero).
    Raw,
    /// `qcow2:`: QEMU's copy-on-write format (what Proxmox and libvirt import).
    Qcow2,
    /// `iso:`: a live ISO (a compressed read-only root under a memory overlay).
    Iso,
}

impl DiskFormat {
    /// The location prefix without the colon: `raw`, `qcow2`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Iso => "iso",
        }
    }
}

/// A failure to read, write or copy an image.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The location string is not understood.
    #[error("`{input}` is not an image location: {reason}")]
    Parse {
        /// What was given.
        input: String,
        /// Why it is wrong, and what to write instead.
        reason: String,
    },
    /// Reading or writing local image files failed.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The image is malformed or not what was asked for.
    #[error("{0}")]
    Invalid(String),
    /// A digest (from a registry) is malformed.
    #[error(transparent)]
    Digest(#[from] strata_oci::DigestError),
    /// Reading an image back failed.
    #[error(transparent)]
    Read(#[from] strata_oci::read::ReadError),
    /// Writing an image out failed.
    #[error(transparent)]
    Output(#[from] strata_oci::output::OutputError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] strata_registry::RegistryError),
}

impl Transport {
    /// Parses `oci:DIR[:TAG]`, `docker-archive:FILE`, `docker://REF` or `-`.
    pub fn parse(s: &str) -> Result<Self, TransportError> {
        let bad = |reason: &str| TransportError::Parse {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s == "-" {
            return Ok(Self::Stdout);
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                return Err(bad("oci: needs a directory, as in oci:./out"));
            }
            // oci:DIR:TAG as skopeo writes it; a colon inside DIR is not supported.
            return Ok(match rest.rsplit_once(':') {
                Some((dir, tag)) if !tag.is_empty() && !tag.contains('/') && !dir.is_empty() => {
                    Self::Oci(dir.into(), Some(tag.to_owned()))
                }
                _ => Self::Oci(rest.into(), None),
            });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err(bad(
                    "docker-archive: needs a file, as in docker-archive:./image.tar",
                ));
            }
            return Ok(Self::DockerArchive(rest.into()));
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return Ok(Self::Registry(Reference::parse(rest)?));
        }
        for format in [DiskFormat::Raw, DiskFormat::Qcow2, DiskFormat::Iso] {
            if let Some(rest) = s
                .strip_prefix(format.name())
                .and_then(|r| r.strip_prefix(':'))
            {
                if rest.is_empty() || rest.ends_with('/') {
                    return Err(bad(&format!(
                        "{0}: needs a file, as in {0}:./disk.{0}",
                        format.name()
                    )));
                }
                return Ok(Self::Disk(format, rest.into()));
            }
        }
        Err(bad(
            "use oci:DIR[:TAG], docker-archive:FILE, docker://HOST/REPO[:TAG], raw:FILE, \
             qcow2:FILE, iso:FILE or -",
        ))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oci(dir, None) => write!(f, "oci:{}", dir.display()),
            Self::Oci(dir, Some(tag)) => write!(f, "oci:{}:{tag}", dir.display()),
            Self::DockerArchive(file) => write!(f, "docker-archive:{}", file.display()),
            Self::Registry(r) => write!(f, "docker://{r}"),
            Self::Stdout => f.write_str("-"),
            Self::Disk(format, file) => write!(f, "{}:{}", format.name(), file.display()),
        }
    }
}

/// What a command that runs or checks an image was given: a spec file (built first) or an
/// image location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A spec file.
    Spec(PathBuf),
    /// An image location.
    Image(Transport),
}

impl Target {
    /// An argument with a location prefix (`oci:`, `docker-archive:`, `docker://`) is a
    /// location, parsed by [`Transport::parse`]; anything else is a spec file's path.
    pub fn parse(s: &str) -> Result<Self, TransportError> {
        let is_location = ["oci:", "docker-archive:", "docker://"]
            .iter()
            .any(|p| s.starts_with(p));
        if is_location {
            Ok(Self::Image(Transport::parse(s)?))
        } else {
            Ok(Self::Spec(PathBuf::from(s)))
        }
    }
}

/// What writing an image produced.
#[derive(Debug, Clone)]
pub enum Written {
    /// Written to a local file or directory.
    Local,
    /// Pushed; per-blob outcomes in the report.
    Pushed {
        /// Where it went: the destination with the tag it was pushed under.
        reference: Reference,
        /// What the push did.
        report: PushReport,
    },
}

/// Writes `image` to `dest`. For a registry without a tag in `dest`, the image's own tag is
/// used. `scratch` is a directory for temporary files (the config blob when pushing).
pub fn write(
    image: &BuiltImage,
    dest: &Transport,
    client: Option<&Client>,
    reporter: &dyn Reporter,
    scratch: &Path,
) -> Result<Written, TransportError> {
    write_from(image, dest, client, reporter, scratch, None)
}

/// Like [`write`], for an image read from `source`. When `source` is another repository of
/// the registry `dest` names, the blobs the destination lacks are mounted from it (the
/// registry copies them itself) instead of uploaded.
pub fn write_from(
    image: &BuiltImage,
    dest: &Transport,
    client: Option<&Client>,
    reporter: &dyn Reporter,
    scratch: &Path,
    source: Option<&Transport>,
) -> Result<Written, TransportError> {
    match dest {
        Transport::Oci(dir, tag) => {
            let mut image = image.clone();
            if let Some(tag) = tag {
                image.tag = tag.clone();
            }
            write_oci_layout(&image, dir)?;
            Ok(Written::Local)
        }
        Transport::DockerArchive(file) => {
            write_docker_archive_file(image, file)?;
            Ok(Written::Local)
        }
        Transport::Stdout => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            write_docker_archive(image, &mut out)?;
            out.flush().map_err(|source| TransportError::Io {
                action: "write",
                path: "<stdout>".into(),
                source,
            })?;
            Ok(Written::Local)
        }
        Transport::Registry(reference) => {
            let client = client
                .ok_or_else(|| TransportError::Invalid("pushing needs a registry client".into()))?;
            let reference = if reference.tag.is_none() && reference.digest.is_none() {
                reference.with_tag(&image.tag)
            } else {
                reference.clone()
            };
            let mount_from = match source {
                Some(Transport::Registry(src))
                    if src.registry == reference.registry
                        && src.repository != reference.repository =>
                {
                    Some(src.repository.clone())
                }
                _ => None,
            };
            // A file of this push's own: other processes may push from the same store at the
            // same time. Removed when dropped, after the push.
            std::fs::create_dir_all(scratch).map_err(|source| TransportError::Io {
                action: "create",
                path: scratch.to_owned(),
                source,
            })?;
            let config_file = tempfile::Builder::new()
                .prefix("config-")
                .suffix(".json")
                .tempfile_in(scratch)
                .map_err(|source| TransportError::Io {
                    action: "create a temporary file in",
                    path: scratch.to_owned(),
                    source,
                })?;
            let config_path = config_file.path().to_owned();
            std::fs::write(&config_path, &image.config).map_err(|source| TransportError::Io {
                action: "write",
                path: config_path.clone(),
                source,
            })?;
            let push = PushImage {
                manifest: image.manifest.clone(),
                manifest_media_type: image.manifest_media_type.clone(),
                config: Blob {
                    digest: image.config_digest.to_string(),
                    size: image.config.len() as u64,
                    media_type: config_media_type(&image.manifest_media_type).to_owned(),
                    path: config_path,
                    mount_from: mount_from.clone(),
                },
                layers: image
                    .layers
                    .iter()
                    .map(|l| Blob {
                        digest: l.digests.digest.to_string(),
                        size: l.digests.size,
                        media_type: l.media_type.clone(),
                        path: l.path.clone(),
                        mount_from: mount_from.clone(),
                    })
                    .collect(),
            };
            let report = client.push(&reference, &push, reporter)?;
            drop(config_file);
            Ok(Written::Pushed { reference, report })
        }
        Transport::Disk(format, _) => Err(TransportError::Invalid(format!(
            "{dest}: a {} disk image is made from a spec with [boot] by `strata build`, not \
             copied from another image",
            format.name()
        ))),
    }
}

fn config_media_type(manifest_media_type: &str) -> &'static str {
    if manifest_media_type == strata_registry::MEDIA_TYPE_DOCKER_MANIFEST {
        "application/vnd.docker.container.image.v1+json"
    } else {
        strata_oci::image::CONFIG_MEDIA_TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        assert_eq!(
            Transport::parse("oci:out/x:latest").expect("parse"),
            Transport::Oci("out/x".into(), Some("latest".into()))
        );
        assert_eq!(
            Transport::parse("oci:out").expect("parse"),
            Transport::Oci("out".into(), None)
        );
        assert_eq!(
            Transport::parse("docker-archive:a.tar").expect("parse"),
            Transport::DockerArchive("a.tar".into())
        );
        let Transport::Registry(r) =
            Transport::parse("docker://127.0.0.1:5000/ws/base:v1").expect("parse")
        else {
            panic!("registry transport expected");
        };
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "ws/base");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(Transport::parse("dir:x").is_err());
        assert!(Transport::parse("oci:").is_err());
        assert_eq!(
            Transport::parse("qcow2:out/ws.qcow2").expect("parse"),
            Transport::Disk(DiskFormat::Qcow2, "out/ws.qcow2".into())
        );
        assert_eq!(
            Transport::parse("raw:ws.img").expect("parse").to_string(),
            "raw:ws.img"
        );
        assert!(Transport::parse("raw:").is_err());
        assert!(Transport::parse("qcow2:dir/").is_err());
    }

    #[test]
    fn targets_are_specs_or_locations_with_one_meaning() {
        // oci:DIR:TAG means the same to run, check and inspect: the last colon splits the tag.
        assert_eq!(
            Target::parse("oci:out/a:b:v1").expect("parse"),
            Target::Image(Transport::Oci("out/a:b".into(), Some("v1".into())))
        );
        assert_eq!(
            Target::parse("oci:out/x").expect("parse"),
            Target::Image(Transport::Oci("out/x".into(), None))
        );
        assert_eq!(
            Target::parse("examples/hello/strata.toml").expect("parse"),
            Target::Spec("examples/hello/strata.toml".into())
        );
        assert!(Target::parse("docker://").is_err());
        assert!(Target::parse("oci:").is_err());
    }
}
