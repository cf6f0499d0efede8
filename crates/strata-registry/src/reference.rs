//! Image references: `[docker://]HOST[:PORT]/REPO[:TAG][@DIGEST]`.

use std::fmt;
use std::str::FromStr;

use crate::error::RegistryError;

/// The registry name used for references without a host, as Docker does.
pub const DOCKER_HUB: &str = "docker.io";

/// A reference to an image in a registry.
///
/// Parsed from skopeo's transport syntax (`docker://host:5000/a/b:tag`) or a
/// plain reference (`host/a/b@sha256:...`). A reference without a registry
/// host names Docker Hub (`docker.io`), and a single-component Docker Hub
/// repository gets the `library/` prefix, as with `docker pull`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry host, with the port if any (`host[:port]`).
    pub registry: String,
    /// The repository path inside the registry (`a/b`).
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The manifest digest (`sha256:<hex>`), if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference; the `docker://` prefix is optional.
    pub fn parse(input: &str) -> Result<Self, RegistryError> {
        let err = |reason: &str| RegistryError::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let rest = input.strip_prefix("docker://").unwrap_or(input);
        if rest.is_empty() {
            return Err(err("empty reference"));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest).map_err(|r| err(&r))?;
                (name, Some(digest.to_string()))
            }
            None => (rest, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            validate_tag(tag).map_err(|r| err(&r))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if registry.is_empty() {
            return Err(err("empty registry host"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|r| err(&r))?;
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag or digest used to address the manifest: the digest when there
    /// is one (it is exact), else the tag, else `latest`.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository with the given tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository with the given digest and no tag.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    /// Writes `host/repo[:tag][@digest]` (without the `docker://` prefix).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    if !digest.starts_with("sha256:") {
        return Err(format!(
            "unsupported digest {digest:?} (only sha256 is supported)"
        ));
    }
    strata_oci::Digest::parse(digest)
        .map(drop)
        .map_err(|e| format!("malformed digest {digest:?}: {}", e.reason))
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?}"))
    }
}

fn validate_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("empty repository name".into());
    }
    for component in repo.split('/') {
        let ok = !component.is_empty()
            && component.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && component
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && component
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "invalid repository name {repo:?} (lowercase letters, digits and . _ - / only)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_transport_syntax() -> Result<(), RegistryError> {
        let r = Reference::parse("docker://127.0.0.1:5000/a/b:v1")?;
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);
        assert_eq!(r.to_string(), "127.0.0.1:5000/a/b:v1");
        Ok(())
    }

    #[test]
    fn parses_digest_and_defaults() -> Result<(), RegistryError> {
        let r = Reference::parse(&format!("host.example/a/b@{D}"))?;
        assert_eq!(r.registry, "host.example");
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        let r = Reference::parse("localhost:5000/x")?;
        assert_eq!(
            (r.registry.as_str(), r.manifest_reference()),
            ("localhost:5000", "latest")
        );
        let r = Reference::parse("debian:bookworm")?;
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/debian");
        let r = Reference::parse(&format!("docker://[::1]:5000/r:t@{D}"))?;
        assert_eq!(r.registry, "[::1]:5000");
        assert_eq!(r.tag.as_deref(), Some("t"));
        Ok(())
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "docker://",
            "host.example/UPPER",
            "host.example/a:bad tag",
            "host.example/a@sha256:1234",
            "host.example/a@md5:abcd",
            "host.example//a",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
