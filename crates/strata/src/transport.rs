//! Image locations in skopeo's transport syntax.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Result, bail};

/// Where an image is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `oci:DIR[:TAG]`: an OCI image layout.
    Oci(PathBuf, Option<String>),
    /// `docker-archive:FILE`: a `docker save` tarball.
    DockerArchive(PathBuf),
    /// `-`: a docker-archive on stdout.
    Stdout,
}

impl Transport {
    /// Parses `oci:DIR[:TAG]`, `docker-archive:FILE` or `-`.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "-" {
            return Ok(Self::Stdout);
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                bail!("`{s}`: oci: needs a directory, as in oci:./out");
            }
            // oci:DIR:TAG, as skopeo writes it; a colon inside DIR is not supported.
            return Ok(match rest.split_once(':') {
                Some((dir, tag)) if !tag.is_empty() && !tag.contains('/') => {
                    Self::Oci(dir.into(), Some(tag.to_owned()))
                }
                _ => Self::Oci(rest.into(), None),
            });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                bail!("`{s}`: docker-archive: needs a file, as in docker-archive:./image.tar");
            }
            return Ok(Self::DockerArchive(rest.into()));
        }
        bail!("`{s}` is not an image location; use oci:DIR, docker-archive:FILE or -")
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oci(dir, None) => write!(f, "oci:{}", dir.display()),
            Self::Oci(dir, Some(tag)) => write!(f, "oci:{}:{tag}", dir.display()),
            Self::DockerArchive(file) => write!(f, "docker-archive:{}", file.display()),
            Self::Stdout => f.write_str("-"),
        }
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
        assert!(Transport::parse("dir:x").is_err());
        assert!(Transport::parse("oci:").is_err());
    }
}
