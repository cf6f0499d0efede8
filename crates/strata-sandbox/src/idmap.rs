//! Which host ids the sandbox's user namespace maps, and how the map is written.
//!
//! - The host's root maps every id to itself (`0 0 4294967295`): files keep their owners.
//! - An ordinary user maps to root inside (uid 0 → the caller). With a range in
//!   `/etc/subuid` and `/etc/subgid` and the setuid helpers `newuidmap`/`newgidmap`, ids
//!   1… map onto that range too, so images with several users work (as `podman` and
//!   `mmdebstrap --mode=unshare` do). Without them only root exists inside.

use std::path::{Path, PathBuf};

/// One line of a uid or gid map: `count` ids from `inside` map to `outside` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// How the map is written into `/proc/PID/{uid,gid}_map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapWriter {
    /// The parent writes the files itself (root, or a single id of an ordinary user, after
    /// writing `deny` to `setgroups`).
    Direct,
    /// The setuid helpers write them (ranges from `/etc/subuid` and `/etc/subgid`).
    Helpers {
        /// `newuidmap`.
        newuidmap: PathBuf,
        /// `newgidmap`.
        newgidmap: PathBuf,
    },
}

/// The id mapping of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapping {
    /// uid map lines.
    pub uids: Vec<IdRange>,
    /// gid map lines.
    pub gids: Vec<IdRange>,
    /// How they are written.
    pub writer: MapWriter,
}

/// The first `(start, count)` range of `/etc/subuid`-style `text` for the user `name` or
/// the numeric `id`.
pub fn sub_range(text: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let owner = f.next()?;
        if owner != id && Some(owner) != name {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

/// The ids mapped in this process's own user namespace (`/proc/self/uid_map`), each mapped
/// to itself.
fn own_ranges(map: &str) -> Vec<IdRange> {
    map.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let inside: u32 = f.next()?.parse().ok()?;
            let _outside: u32 = f.next()?.parse().ok()?;
            let count: u32 = f.next()?.parse().ok()?;
            Some(IdRange {
                inside,
                outside: inside,
                count,
            })
        })
        .collect()
}

fn find_helper(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl IdMapping {
    /// The mapping for a caller with `uid`/`gid`: identity for root; otherwise root inside
    /// is the caller, plus the caller's subordinate ranges when both ranges and both helpers
    /// exist.
    pub fn plan(
        uid: u32,
        gid: u32,
        subuid: Option<(u32, u32)>,
        subgid: Option<(u32, u32)>,
        helpers: Option<(PathBuf, PathBuf)>,
    ) -> Self {
        if uid == 0 {
            let all = vec![IdRange {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            }];
            return Self {
                uids: all.clone(),
                gids: all,
                writer: MapWriter::Direct,
            };
        }
        let own = |outside| IdRange {
            inside: 0,
            outside,
            count: 1,
        };
        match (subuid, subgid, helpers) {
            (Some((us, uc)), Some((gs, gc)), Some((newuidmap, newgidmap))) => Self {
                uids: vec![
                    own(uid),
                    IdRange {
                        inside: 1,
                        outside: us,
                        count: uc,
                    },
                ],
                gids: vec![
                    own(gid),
                    IdRange {
                        inside: 1,
                        outside: gs,
                        count: gc,
                    },
                ],
                writer: MapWriter::Helpers {
                    newuidmap,
                    newgidmap,
                },
            },
            _ => Self {
                uids: vec![own(uid)],
                gids: vec![own(gid)],
                writer: MapWriter::Direct,
            },
        }
    }

    /// The mapping for this process: its effective ids, `/etc/subuid`, `/etc/subgid`, and
    /// the helpers found on the system.
    pub fn detect() -> Self {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let name = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name);
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        if uid == 0 {
            // Root of a user namespace that maps only part of the ids (`unshare -Ur`): map
            // exactly those, so file owners outside them are not promised.
            let uids = own_ranges(&read("/proc/self/uid_map"));
            let gids = own_ranges(&read("/proc/self/gid_map"));
            let full = |r: &[IdRange]| r.len() == 1 && r[0].count == u32::MAX;
            let partial = !(full(&uids) && full(&gids));
            if partial && !uids.is_empty() && !gids.is_empty() {
                return Self {
                    uids,
                    gids,
                    writer: MapWriter::Direct,
                };
            }
        }
        let subuid = sub_range(&read("/etc/subuid"), name.as_deref(), uid);
        let subgid = sub_range(&read("/etc/subgid"), name.as_deref(), uid);
        let helpers = find_helper("newuidmap").zip(find_helper("newgidmap"));
        Self::plan(uid, gid, subuid, subgid, helpers)
    }

    /// Whether the caller is the host's root (identity mapping).
    pub fn is_host_root(&self) -> bool {
        self.uids.first().is_some_and(|r| r.count == u32::MAX)
    }

    /// Whether `uid` (inside) is mapped.
    pub fn maps_uid(&self, uid: u32) -> bool {
        self.uids
            .iter()
            .any(|r| uid >= r.inside && uid - r.inside < r.count)
    }

    /// Whether `gid` (inside) is mapped.
    pub fn maps_gid(&self, gid: u32) -> bool {
        self.gids
            .iter()
            .any(|r| gid >= r.inside && gid - r.inside < r.count)
    }

    /// The text of a `/proc/PID/uid_map` (or `gid_map`) for `ranges`.
    pub fn map_text(ranges: &[IdRange]) -> String {
        ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
            .collect()
    }

    /// Arguments of `newuidmap`/`newgidmap` for `pid`: `PID INSIDE OUTSIDE COUNT…`.
    pub fn helper_args(pid: i32, ranges: &[IdRange]) -> Vec<String> {
        let mut args = vec![pid.to_string()];
        for r in ranges {
            args.extend([r.inside, r.outside, r.count].map(|n| n.to_string()));
        }
        args
    }

    /// A short name of this mapping, part of the cache key of unpacked root file systems
    /// (file owners on the host depend on it).
    pub fn cache_key(&self) -> String {
        if self.is_host_root() {
            return "root".into();
        }
        let text = format!(
            "{}|{}",
            Self::map_text(&self.uids),
            Self::map_text(&self.gids)
        );
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        format!(
            "u{}-{}",
            self.uids.first().map_or(0, |r| r.outside),
            &hash[..12]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_maps_everything() {
        let m = IdMapping::plan(0, 0, None, None, None);
        assert!(m.is_host_root());
        assert_eq!(IdMapping::map_text(&m.uids), "0 0 4294967295\n");
        assert_eq!(m.writer, MapWriter::Direct);
        assert_eq!(m.cache_key(), "root");
    }

    #[test]
    fn user_with_subordinate_ranges_uses_helpers() {
        let subuid = "other:200000:65536\nalice:100000:65536\n";
        let range = sub_range(subuid, Some("alice"), 1000);
        assert_eq!(range, Some((100000, 65536)));
        assert_eq!(sub_range("1000:5:10\n", Some("bob"), 1000), Some((5, 10)));
        let helpers = Some(("/usr/bin/newuidmap".into(), "/usr/bin/newgidmap".into()));
        let m = IdMapping::plan(1000, 1000, range, range, helpers);
        assert_eq!(IdMapping::map_text(&m.uids), "0 1000 1\n1 100000 65536\n");
        assert_eq!(
            IdMapping::helper_args(42, &m.gids),
            ["42", "0", "1000", "1", "1", "100000", "65536"]
        );
        assert!(matches!(m.writer, MapWriter::Helpers { .. }));
        assert!(m.maps_uid(1000) && m.maps_uid(65536) && !m.maps_uid(65537));
    }

    #[test]
    fn user_without_ranges_maps_only_root() {
        let m = IdMapping::plan(1000, 100, Some((100000, 65536)), None, None);
        assert_eq!(IdMapping::map_text(&m.uids), "0 1000 1\n");
        assert_eq!(IdMapping::map_text(&m.gids), "0 100 1\n");
        assert_eq!(m.writer, MapWriter::Direct);
        assert!(m.maps_uid(0) && !m.maps_uid(1000));
        assert!(m.cache_key().starts_with("u1000-"));
    }
}
