//! The `[nix.base]` / `[nix.user]` tables of a spec's lock file: what each half's installables
//! and paths resolved to, store path and NAR hash of every requested output.
//!
//! The lock file is shared with the other sources; its other keys are left alone here, and
//! [`NixLock::to_toml`] gives the text `strata lock` appends.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::NixError;

/// One requested output, as locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedOutput {
    /// The installable (or store path of `paths`) it is an output of, as the spec writes it.
    pub installable: String,
    /// Its store path.
    pub path: String,
    /// Its NAR hash, as `nix path-info` reported it.
    pub nar_hash: String,
}

/// A flake the installables name, as `nix flake metadata` locked it when the half was locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedFlake {
    /// The flake reference as the spec writes it (`.`, `nixpkgs`, `github:owner/repo`).
    pub flake: String,
    /// Its locked URL (with the revision or NAR hash that pins it).
    pub url: String,
    /// Each input of its lock (`flake.lock`) by name: the locked revision, or the NAR hash
    /// of inputs without one.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub inputs: std::collections::BTreeMap<String, String>,
}

/// One half's Nix lock: the request it was made for and what it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfLock {
    /// The spec's installables when it was locked, in order.
    pub installables: Vec<String>,
    /// The spec's store paths when it was locked, in order.
    pub paths: Vec<String>,
    /// The requested outputs, in the order the profile takes them.
    pub outputs: Vec<LockedOutput>,
    /// The flakes of the installables (none for expression files and store paths). What
    /// `--locked` checks is the outputs; the flakes say where they came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flakes: Vec<LockedFlake>,
}

impl HalfLock {
    /// Whether the lock was made for this request.
    pub fn matches(&self, installables: &[String], paths: &[String]) -> bool {
        self.installables == installables && self.paths == paths
    }
}

/// The Nix locks of a spec's halves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NixLock {
    /// The base half's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<HalfLock>,
    /// The user half's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<HalfLock>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    nix: NixLock,
}

#[derive(Serialize)]
struct FileOut<'a> {
    nix: &'a NixLock,
}

impl NixLock {
    /// The lock of a half (`base` or `user`).
    pub fn half(&self, half: &str) -> Option<&HalfLock> {
        match half {
            "base" => self.base.as_ref(),
            "user" => self.user.as_ref(),
            _ => None,
        }
    }

    /// Whether no half is locked.
    pub fn is_empty(&self) -> bool {
        self.base.is_none() && self.user.is_none()
    }

    /// The `[nix.*]` tables as TOML text.
    pub fn to_toml(&self) -> Result<String, NixError> {
        toml::to_string(&FileOut { nix: self }).map_err(|e| NixError::LockFile {
            path: "(lock)".into(),
            message: e.to_string(),
        })
    }

    /// Parses the `[nix.*]` tables of a lock file's text; `path` is for messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, NixError> {
        let file: File = toml::from_str(text).map_err(|e| NixError::LockFile {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        for half in [&file.nix.base, &file.nix.user].into_iter().flatten() {
            for o in &half.outputs {
                if !o.path.starts_with("/nix/store/")
                    || crate::db::base16_hash(&o.nar_hash).is_none()
                {
                    return Err(NixError::LockFile {
                        path: path.to_owned(),
                        message: format!(
                            "nix output `{}` of `{}`: not a store path with a sha256 NAR hash",
                            o.path, o.installable
                        ),
                    });
                }
            }
        }
        Ok(file.nix)
    }

    /// Reads the lock file at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, NixError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NixError::LockFile {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_ignores_other_keys() {
        let lock = NixLock {
            base: None,
            user: Some(HalfLock {
                installables: vec!["./graph.nix".into()],
                paths: vec![],
                outputs: vec![LockedOutput {
                    installable: "./graph.nix".into(),
                    path: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-app".into(),
                    nar_hash: "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=".into(),
                }],
                flakes: vec![LockedFlake {
                    flake: ".".into(),
                    url: "path:/x?narHash=sha256-AAAA".into(),
                    inputs: [("nixpkgs".to_owned(), "0123abcd".to_owned())].into(),
                }],
            }),
        };
        let text = format!(
            "version = 1\n\n[[fetch]]\nurl = \"x\"\n\n{}",
            lock.to_toml().expect("toml")
        );
        let back = NixLock::from_toml(&text, Path::new("strata.lock")).expect("parse");
        assert_eq!(back, lock);
        assert!(
            back.half("user")
                .expect("user")
                .matches(&["./graph.nix".into()], &[])
        );
        assert!(back.half("base").is_none());

        let bad = text.replace("sha256-", "md5-");
        let err = NixLock::from_toml(&bad, Path::new("strata.lock")).expect_err("bad hash");
        assert!(err.to_string().contains("strata.lock"), "{err}");
    }
}
