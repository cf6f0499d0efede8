//! Where a store's files are on this machine.
//!
//! A store path names a file by its *logical* location (`/nix/store/<hash>-<name>`), the place
//! it has in the image. A store may keep its files elsewhere: a chroot store
//! (`local?root=/srv/nix`, or just `/srv/nix`) holds `/nix/store/x` at `/srv/nix/nix/store/x`,
//! and `local?real=/d` keeps the store directory's contents in `/d`. strata reads the files from
//! that physical place.

use std::path::{Path, PathBuf};

use crate::NixError;

/// The physical place of a local store's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// Store paths live at `<root>/<logical path>` (`/` for an ordinary store).
    Root(PathBuf),
    /// The store directory's entries live directly in this directory.
    Real(PathBuf),
}

impl StoreLocation {
    /// Interprets a Nix store URI (the `store` setting or a `--store` argument). `cwd` resolves
    /// relative paths, as Nix does for a path given as a store.
    pub fn from_uri(uri: &str, cwd: &Path) -> Result<Self, NixError> {
        let unsupported = |why: &str| NixError::UnsupportedStore {
            uri: uri.to_owned(),
            why: why.to_owned(),
        };
        let (base, query) = match uri.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (uri, None),
        };
        let mut root = None;
        let mut real = None;
        for (key, value) in query.into_iter().flat_map(parse_query) {
            match key.as_str() {
                "root" => root = Some(value),
                "real" => real = Some(value),
                _ => {}
            }
        }
        let local = match base {
            "" | "auto" | "local" | "daemon" => true,
            b if b.starts_with("unix://") => true,
            b if !b.contains("://") && b.contains('/') => {
                root = Some(b.to_owned());
                true
            }
            _ => false,
        };
        if !local {
            return Err(unsupported(
                "strata reads store files directly, so the store must be a local one (`auto`, \
                 `local`, `daemon`, or a directory such as `local?root=/srv/nix`)",
            ));
        }
        if let Some(real) = real {
            return Ok(StoreLocation::Real(cwd.join(real)));
        }
        Ok(StoreLocation::Root(match root {
            Some(root) if !root.is_empty() => cwd.join(root),
            _ => PathBuf::from("/"),
        }))
    }

    /// Where the files of the store path `logical` are on this machine.
    pub fn physical(&self, logical: &str) -> PathBuf {
        match self {
            StoreLocation::Root(root) => root.join(logical.trim_start_matches('/')),
            StoreLocation::Real(dir) => {
                let name = logical.trim_end_matches('/').rsplit('/').next();
                dir.join(name.unwrap_or(logical))
            }
        }
    }
}

/// `a=1&b=%2Fx` as decoded pairs.
fn parse_query(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_uris_map_logical_paths_to_files() {
        let cwd = Path::new("/work");
        let p = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello";
        let at = |uri: &str| {
            StoreLocation::from_uri(uri, cwd)
                .expect("local store")
                .physical(p)
        };
        for uri in [
            "auto",
            "local",
            "daemon",
            "unix:///nix/var/nix/daemon-socket/socket",
        ] {
            assert_eq!(at(uri), PathBuf::from(p), "{uri}");
        }
        let chroot = PathBuf::from("/srv/nix").join(&p[1..]);
        assert_eq!(at("/srv/nix"), chroot);
        assert_eq!(at("local?root=/srv/nix"), chroot);
        assert_eq!(at("local?root=%2Fsrv%2Fnix&store=/nix/store"), chroot);
        assert_eq!(at("./rel"), PathBuf::from("/work/./rel").join(&p[1..]));
        assert_eq!(
            at("local?real=/d"),
            PathBuf::from("/d/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello")
        );
        for remote in ["ssh://host", "https://cache.nixos.org", "s3://bucket"] {
            let err = StoreLocation::from_uri(remote, cwd).expect_err(remote);
            assert!(err.to_string().contains(remote), "{err}");
        }
    }
}
