//! Resolving the user a command runs as: `NAME`, `UID`, `NAME:GROUP` or `UID:GID`, looked up
//! in the image's own `/etc/passwd` and `/etc/group`, as container engines do.

use std::path::Path;

use strata_fstree::passwd::{parse_group, parse_passwd};

use crate::SandboxError;
use crate::paths::resolve_in_root;

/// The identity a command runs with inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership).
    pub groups: Vec<u32>,
    /// Home directory from `/etc/passwd`, if the user has an entry.
    pub home: Option<String>,
}

impl User {
    /// root, with no supplementary groups.
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: Some("/root".into()),
        }
    }
}

fn read_in_roots(roots: &[&Path], file: &str) -> String {
    for root in roots {
        if let Ok(path) = resolve_in_root(root, Path::new(file), true)
            && let Ok(text) = std::fs::read_to_string(path)
        {
            return text;
        }
    }
    String::new()
}

/// Resolves `spec` (`NAME`, `UID`, with an optional `:GROUP` or `:GID`) against the first of
/// `roots` (top layer first) holding `/etc/passwd` and `/etc/group`. An empty spec is root.
pub fn resolve_user(spec: &str, roots: &[&Path]) -> Result<User, SandboxError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(User::root());
    }
    let passwd = parse_passwd(&read_in_roots(roots, "/etc/passwd"));
    let group_lines = parse_group(&read_in_roots(roots, "/etc/group"));
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|e| e.uid == uid),
        Err(_) => Some(passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
            SandboxError::Invalid(format!(
                "user `{user_part}` is not in the image's /etc/passwd; give a numeric uid"
            ))
        })?),
    };
    let uid = match user_part.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry.map_or(0, |e| e.uid),
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_lines
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    SandboxError::Invalid(format!(
                        "group `{g}` is not in the image's /etc/group; give a numeric gid"
                    ))
                })?,
        },
        None => entry.map_or(0, |e| e.gid),
    };
    let mut supplementary: Vec<u32> = match entry {
        Some(e) if group_part.is_none() => group_lines
            .iter()
            .filter(|group| group.members.contains(&e.name))
            .map(|group| group.gid)
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    supplementary.sort_unstable();
    supplementary.dedup();
    Ok(User {
        uid,
        gid,
        groups: supplementary,
        home: entry.map(|e| e.home.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ncoder:x:1000:1000::/home/coder:/bin/sh\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nsudo:x:27:coder\ncoder:x:1000:\nstaff:x:50:\n",
        )
        .expect("write");
        let roots = [dir.path()];
        let coder = resolve_user("coder", &roots).expect("coder");
        assert_eq!(
            (coder.uid, coder.gid, coder.groups.clone()),
            (1000, 1000, vec![27])
        );
        assert_eq!(coder.home.as_deref(), Some("/home/coder"));
        let n = resolve_user("1000", &roots).expect("uid");
        assert_eq!((n.uid, n.gid), (1000, 1000));
        let g = resolve_user("coder:staff", &roots).expect("group");
        assert_eq!((g.uid, g.gid, g.groups.len()), (1000, 50, 0));
        let unknown = resolve_user("4242:7", &roots).expect("numeric");
        assert_eq!((unknown.uid, unknown.gid, unknown.home), (4242, 7, None));
        assert_eq!(resolve_user("", &roots).expect("root"), User::root());
        let err = resolve_user("nobody", &roots).expect_err("unknown name");
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
    }
}
