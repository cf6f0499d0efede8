//! Content digests (`algorithm:hex`), validated when parsed.
//!
//! Every digest strata reads from outside (an `index.json`, a manifest, an image configuration,
//! a docker-archive, a registry) becomes a [`Digest`] first. A `Digest` holds only `sha256:`
//! followed by 64 lowercase hex digits or `sha512:` followed by 128, so it is always safe to
//! join onto a directory as `blobs/ALGORITHM/HEX`, and slicing it never splits a character.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::Digest as _;

/// A validated content digest, `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// A string that is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid digest: {reason}")]
pub struct DigestError {
    /// What was given (as it was given; printed with escapes).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Digest {
    /// Parses `algorithm:hex`; only `sha256` (64 lowercase hex digits) and `sha512` (128) are
    /// accepted.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let bad = |reason| DigestError {
            input: s.to_owned(),
            reason,
        };
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected ALGORITHM:HEX, as in sha256:0f3a…"))?;
        let len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(bad("only sha256 and sha512 digests are supported")),
        };
        if hex.len() != len {
            return Err(bad(if len == 64 {
                "a sha256 digest has 64 hex digits"
            } else {
                "a sha512 digest has 128 hex digits"
            }));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("the hex part must be lowercase 0-9a-f"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Self {
        Self::from_sha256(sha2::Sha256::digest(bytes).into())
    }

    /// The digest of a finished sha256 hash.
    pub fn from_sha256(hash: [u8; 32]) -> Self {
        Self(format!("sha256:{}", hex::encode(hash)))
    }

    /// `sha256` or `sha512`.
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    /// The whole digest, `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for tables: the algorithm and the first 12 hex digits.
    pub fn short(&self) -> &str {
        // ASCII only, so any byte index is a character boundary.
        &self.0[..self.algorithm().len() + 1 + 12]
    }

    /// Where an OCI image layout rooted at `root` keeps this blob: `root/blobs/ALGORITHM/HEX`.
    pub fn blob_path(&self, root: &Path) -> PathBuf {
        root.join("blobs").join(self.algorithm()).join(self.hex())
    }

    /// Whether `bytes` have this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        match self.algorithm() {
            "sha256" => hex::encode(sha2::Sha256::digest(bytes)) == self.hex(),
            _ => hex::encode(sha2::Sha512::digest(bytes)) == self.hex(),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A digest reads as its `algorithm:hex` string wherever a `&str` is wanted.
impl std::ops::Deref for Digest {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sha256_and_sha512() {
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).expect("sha256");
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.hex(), "a".repeat(64));
        assert_eq!(
            d.blob_path(Path::new("/x")),
            Path::new("/x/blobs/sha256").join("a".repeat(64))
        );
        assert_eq!(d.short(), "sha256:aaaaaaaaaaaa");
        Digest::parse(&format!("sha512:{}", "0".repeat(128))).expect("sha512");
        assert_eq!(Digest::sha256(b""), Digest::sha256(b""));
        assert!(Digest::sha256(b"abc").matches(b"abc"));
        assert!(!Digest::sha256(b"abc").matches(b"abd"));
    }

    #[test]
    fn path_traversal_digest_is_refused() {
        let err = Digest::parse("sha256:../../../../etc/passwd").expect_err("traversal");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        // Same length as a real digest, but not hex.
        let sneaky = format!("sha256:../../../../etc/passwd{}", "a".repeat(64 - 22));
        assert_eq!(sneaky.len(), 71);
        assert!(Digest::parse(&sneaky).is_err());
    }

    #[test]
    fn non_ascii_digest_is_an_error_not_a_panic() {
        // 64 bytes of hex length made of two-byte characters.
        let s = format!("sha256:{}", "é".repeat(32));
        let err = Digest::parse(&s).expect_err("non-ASCII");
        assert!(err.to_string().contains("lowercase"), "{err}");
        assert!(Digest::parse("sha256é:00").is_err());
    }

    #[test]
    fn other_malformed_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("md5:{}", "a".repeat(32)),
            &format!("sha256:{}", "a".repeat(65)),
            &format!("sha512:{}", "a".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
        let json: Result<Digest, _> = serde_json::from_str("\"sha256:../x\"");
        assert!(json.is_err());
    }
}
