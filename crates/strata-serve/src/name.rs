//! Repository names the server answers, and the specs they stand for.
//!
//! * `debian/[META/...]SUITE/PKG[/PKG...]`: an image of those Debian packages (and their
//!   dependencies) from SUITE. The package list is sorted and deduplicated, so every order
//!   names the same image. META segments come before the suite: `shell` (bash and coreutils,
//!   `bash` as the command), `coder` (a Coder-ready workspace account, with curl for the agent),
//!   and an OCI architecture (`amd64`, `arm64`, ...).
//! * `spec/NAME`: the spec `DIR/NAME/strata.toml` of `--specs DIR`.
//! * `nix/ATTR[/ATTR...]`: an image of those attributes of the `nixpkgs` flake, as the
//!   server's nix resolves `nixpkgs` (its flake registry), e.g. `nix/git/htop` for
//!   `nixpkgs#git` and `nixpkgs#htop`; sorted and deduplicated like Debian packages. A
//!   leading `shell` meta segment adds `bashInteractive` and `coreutils`. Repository names
//!   are lowercase, so attributes with capitals (`python3Packages`) cannot be named; a `.`
//!   selects a nested attribute (`nix/nodepackages.pnpm` would be `nodepackages.pnpm`).
//!
//! Repository names may only hold lowercase letters, digits and the separators `.`, `_`, `__`
//! and runs of `-`; Debian package names may also hold `+`. A `+` is written `_p` (`g++` is
//! `g_p_p`, `libstdc++6` is `libstdc_p_p6`): Debian names never contain `_`, so the escape is
//! unambiguous.

use std::fmt;

/// Most characters of a repository name the server accepts.
pub const MAX_NAME: usize = 255;

/// Architectures that may be written as a meta segment (OCI names).
const ARCHITECTURES: &[&str] = &[
    "386", "amd64", "arm", "arm64", "ppc64le", "riscv64", "s390x", "mips64le",
];

/// What a repository name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An image of Debian packages.
    Debian(DebianTarget),
    /// A spec of `--specs DIR`.
    Spec(String),
    /// An image of `nixpkgs` attributes.
    Nix(NixTarget),
    /// A spec of `--specs DIR` with the `[user]` half of `DIR/NAME/users/USER.toml` (the
    /// repository `spec/NAME`, the tag `USER`).
    SpecUser(String, String),
}

/// Whether `tag` may name a user half: lowercase letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit, at most 64 characters, and not `latest`.
pub fn valid_user_tag(tag: &str) -> bool {
    tag.len() <= 64
        && tag != "latest"
        && tag.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// An image of Debian packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianTarget {
    /// Suite or codename (`bookworm`).
    pub suite: String,
    /// Package names, sorted and deduplicated, `+` unescaped.
    pub packages: Vec<String>,
    /// `shell`: bash and coreutils, `bash` as the command.
    pub shell: bool,
    /// `coder`: a Coder workspace account (and curl for the agent download).
    pub coder: bool,
    /// OCI architecture, when given (else the server's).
    pub architecture: Option<String>,
}

/// An image of `nixpkgs` attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixTarget {
    /// Attribute paths of `nixpkgs`, sorted and deduplicated.
    pub attributes: Vec<String>,
    /// `shell`: `bashInteractive` and `coreutils` added, `bash` as the command.
    pub shell: bool,
}

impl NixTarget {
    /// The spec this target stands for, as TOML text (deterministic: the cache key hashes it).
    pub fn spec_toml(&self) -> String {
        let mut attributes = self.attributes.clone();
        if self.shell {
            attributes.extend(["bashInteractive".to_owned(), "coreutils".to_owned()]);
            attributes.sort();
            attributes.dedup();
        }
        let list = attributes
            .iter()
            .map(|a| format!("{:?}", format!("nixpkgs#{a}")))
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = String::from("# Written by strata serve for a nix/... repository name.\n");
        s.push_str("[image]\nname = \"strata-serve/nix\"\n");
        s.push_str(&format!("\n[base]\nnix = {{ installables = [{list}] }}\n"));
        if self.shell {
            s.push_str("\n[config]\ncmd = [\"bash\"]\n");
        }
        s
    }
}

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a valid repository name at all.
    #[error("invalid repository name {0:?}: {1}")]
    Invalid(String, String),
    /// A valid name in no namespace the server serves.
    #[error(
        "unknown repository {0:?}: names start with `debian/SUITE/PKG...`, `nix/ATTR...` or `spec/NAME`"
    )]
    Unknown(String),
}

/// Checks the OCI grammar of a whole repository name.
pub fn check_repository(name: &str) -> Result<(), NameError> {
    let bad = |why: &str| Err(NameError::Invalid(name.to_owned(), why.to_owned()));
    if name.is_empty() || name.len() > MAX_NAME {
        return bad("must be 1 to 255 characters");
    }
    if let Some(c) = name
        .split('/')
        .find(|c| !strata_spec::repository_component(c))
    {
        return bad(&format!(
            "component {c:?} must be lowercase letters and digits joined by `.`, `_`, `__` or `-` \
             (write `+` as `_p`)"
        ));
    }
    Ok(())
}

/// A package name segment with `_p` turned back into `+`.
fn unescape_package(seg: &str, name: &str) -> Result<String, NameError> {
    let mut out = String::with_capacity(seg.len());
    let mut chars = seg.chars();
    while let Some(ch) = chars.next() {
        if ch == '_' {
            match chars.next() {
                Some('p') => out.push('+'),
                _ => {
                    return Err(NameError::Invalid(
                        name.to_owned(),
                        format!("package {seg:?}: `_` only escapes `+` as `_p`"),
                    ));
                }
            }
        } else {
            out.push(ch);
        }
    }
    // Debian policy: two or more characters, starting with a letter or digit.
    let valid = out.len() >= 2
        && out.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && out
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !valid {
        return Err(NameError::Invalid(
            name.to_owned(),
            format!("{out:?} is not a Debian package name"),
        ));
    }
    Ok(out)
}

/// The repository-name spelling of a package (`+` as `_p`).
pub fn escape_package(pkg: &str) -> String {
    pkg.replace('+', "_p")
}

/// Parses a repository name.
pub fn parse(name: &str) -> Result<Target, NameError> {
    check_repository(name)?;
    let mut segs = name.split('/');
    match segs.next() {
        Some("debian") => {
            let mut t = DebianTarget {
                suite: String::new(),
                packages: Vec::new(),
                shell: false,
                coder: false,
                architecture: None,
            };
            for seg in segs.by_ref() {
                match seg {
                    "shell" => t.shell = true,
                    "coder" => t.coder = true,
                    a if ARCHITECTURES.contains(&a) => {
                        if t.architecture.replace(a.to_owned()).is_some() {
                            return Err(NameError::Invalid(
                                name.to_owned(),
                                "more than one architecture".into(),
                            ));
                        }
                    }
                    suite => {
                        t.suite = suite.to_owned();
                        break;
                    }
                }
            }
            if t.suite.is_empty() {
                return Err(NameError::Invalid(
                    name.to_owned(),
                    "no suite: write debian/SUITE/PKG...".into(),
                ));
            }
            for seg in segs {
                t.packages.push(unescape_package(seg, name)?);
            }
            if t.shell {
                t.packages
                    .extend(["bash".to_owned(), "coreutils".to_owned()]);
            }
            if t.coder {
                t.packages.extend(["bash".to_owned(), "curl".to_owned()]);
                t.packages.push("ca-certificates".to_owned());
            }
            t.packages.sort();
            t.packages.dedup();
            if t.packages.is_empty() {
                return Err(NameError::Invalid(
                    name.to_owned(),
                    "no packages: write debian/SUITE/PKG...".into(),
                ));
            }
            Ok(Target::Debian(t))
        }
        Some("nix") => {
            let mut t = NixTarget {
                attributes: Vec::new(),
                shell: false,
            };
            let mut segs = segs.peekable();
            if segs.peek() == Some(&"shell") {
                t.shell = true;
                segs.next();
            }
            for seg in segs {
                // An attribute path: identifiers joined by `.` (the name grammar allows `_`,
                // `-` and digits inside; nix identifiers start with a letter or `_`).
                let ok = seg
                    .split('.')
                    .all(|a| a.starts_with(|c: char| c.is_ascii_lowercase()));
                if !ok {
                    return Err(NameError::Invalid(
                        name.to_owned(),
                        format!("{seg:?} is not a nixpkgs attribute path"),
                    ));
                }
                t.attributes.push(seg.to_owned());
            }
            t.attributes.sort();
            t.attributes.dedup();
            if t.attributes.is_empty() && !t.shell {
                return Err(NameError::Invalid(
                    name.to_owned(),
                    "no attributes: write nix/ATTR...".into(),
                ));
            }
            Ok(Target::Nix(t))
        }
        Some("spec") => {
            let rest: Vec<&str> = segs.collect();
            match rest.as_slice() {
                [one] => Ok(Target::Spec((*one).to_owned())),
                _ => Err(NameError::Invalid(
                    name.to_owned(),
                    "write spec/NAME for DIR/NAME/strata.toml".into(),
                )),
            }
        }
        _ => Err(NameError::Unknown(name.to_owned())),
    }
}

impl Target {
    /// The repository and tag a request for this target names (`spec/NAME` and `USER` for a
    /// user half, else the canonical name and `latest`).
    pub fn repository_and_tag(&self) -> (String, String) {
        match self {
            Target::SpecUser(n, u) => (format!("spec/{n}"), u.clone()),
            other => (other.to_string(), "latest".to_owned()),
        }
    }
}

impl DebianTarget {
    /// The spec this target stands for, as TOML text (deterministic: the cache key hashes it).
    pub fn spec_toml(&self) -> String {
        let list = self
            .packages
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = String::from("# Written by strata serve for a debian/... repository name.\n");
        s.push_str("[image]\nname = \"strata-serve/debian\"\n");
        if let Some(a) = &self.architecture {
            s.push_str(&format!("architecture = {a:?}\n"));
        }
        s.push_str(&format!(
            "\n[base]\ndebian = {{ suite = {:?}, packages = [{list}] }}\n",
            self.suite
        ));
        if self.shell || self.coder {
            s.push_str("\n[config]\ncmd = [\"bash\"]\n");
        }
        if self.coder {
            s.push_str("\n[coder]\n");
        }
        s
    }
}

impl fmt::Display for Target {
    /// The canonical repository name (sorted packages, meta segments in a fixed order).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Spec(n) => write!(f, "spec/{n}"),
            Target::SpecUser(n, u) => write!(f, "spec/{n}:{u}"),
            Target::Nix(t) => {
                f.write_str("nix")?;
                if t.shell {
                    f.write_str("/shell")?;
                }
                for a in &t.attributes {
                    write!(f, "/{a}")?;
                }
                Ok(())
            }
            Target::Debian(t) => {
                f.write_str("debian")?;
                if t.shell {
                    f.write_str("/shell")?;
                }
                if t.coder {
                    f.write_str("/coder")?;
                }
                if let Some(a) = &t.architecture {
                    write!(f, "/{a}")?;
                }
                write!(f, "/{}", t.suite)?;
                for p in &t.packages {
                    write!(f, "/{}", escape_package(p))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn packages_are_sorted_deduplicated_and_unescaped() {
        let Target::Debian(t) = parse("debian/bookworm/jq/g_p_p/curl/jq").unwrap() else {
            panic!()
        };
        assert_eq!(t.packages, ["curl", "g++", "jq"]);
        assert_eq!(t.suite, "bookworm");
        // Every order names the same image.
        let a = parse("debian/bookworm/curl/jq/g_p_p").unwrap();
        assert_eq!(a.to_string(), "debian/bookworm/curl/g_p_p/jq");
        assert_eq!(a, parse("debian/bookworm/jq/g_p_p/curl").unwrap());
    }

    #[test]
    fn meta_segments() {
        let Target::Debian(t) = parse("debian/shell/arm64/bookworm/git").unwrap() else {
            panic!()
        };
        assert!(t.shell && !t.coder);
        assert_eq!(t.architecture.as_deref(), Some("arm64"));
        assert_eq!(t.packages, ["bash", "coreutils", "git"]);
        assert!(t.spec_toml().contains("architecture = \"arm64\""));
        let spec = strata_spec::Spec::parse(&t.spec_toml(), std::path::Path::new("s.toml"));
        assert!(spec.is_ok(), "{spec:?}");
        let Target::Debian(c) = parse("debian/coder/bookworm/git").unwrap() else {
            panic!()
        };
        let spec =
            strata_spec::Spec::parse(&c.spec_toml(), std::path::Path::new("s.toml")).unwrap();
        assert!(spec.coder.is_some());
    }

    #[test]
    fn refused_names() {
        for bad in [
            "debian/bookworm/G++",
            "debian/bookworm/g++",
            "debian/bookworm/a_x",
            "debian/bookworm",
            "debian/shell",
            "debian//jq",
            "debian/bookworm/j",
            "spec/a/b",
        ] {
            assert!(
                matches!(parse(bad), Err(NameError::Invalid(..))),
                "{bad}: {:?}",
                parse(bad)
            );
        }
        assert!(matches!(
            parse("library/alpine"),
            Err(NameError::Unknown(_))
        ));
        assert_eq!(
            parse("spec/team-ws").unwrap(),
            Target::Spec("team-ws".into())
        );
    }

    #[test]
    fn nix_attributes_are_sorted_and_name_nixpkgs_installables() {
        let t = parse("nix/shell/ripgrep/git/ripgrep").unwrap();
        assert_eq!(t.to_string(), "nix/shell/git/ripgrep");
        let Target::Nix(n) = &t else { panic!("{t:?}") };
        let spec = n.spec_toml();
        assert!(
            spec.contains(r#"installables = ["nixpkgs#bashInteractive", "nixpkgs#coreutils", "nixpkgs#git", "nixpkgs#ripgrep"]"#),
            "{spec}"
        );
        assert!(parse("nix").is_err());
        assert!(parse("nix/9lives").is_err());
        assert!(parse("nix/nodepackages.pnpm").is_ok());
    }
}
