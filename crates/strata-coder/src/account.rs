//! The workspace account: the generated `/etc/passwd`, `/etc/group`, `/etc/shadow` (and
//! `/etc/gshadow` when the image has one), the home directory with the skeleton files, the
//! sudoers drop-in, and the image configuration defaults that go with them.
//!
//! Everything is merged with what the image's lower layers already hold: existing lines are kept
//! byte for byte, the account's lines are appended.

use strata_fstree::{Entry, EntryKind, ImagePath};
use strata_spec::Account;

use crate::check::DEFAULT_PATH;
use crate::index::{FileIndex, NodeKind, Resolved};
use crate::passwd::{self, append_line};

/// What the account adds to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFiles {
    /// Generated entries for the customisation layer.
    pub entries: Vec<Entry>,
    /// The image's `User`: the numeric uid alone. Numeric, so Kubernetes' `runAsNonRoot` can
    /// verify it is not root; without a group, so podman and docker take the primary group
    /// from `/etc/passwd` and add the account's supplementary groups from `/etc/group` (with
    /// `uid:gid` they set that one group only).
    pub user: String,
    /// The image's `WorkingDir`: the home directory.
    pub workdir: String,
    /// Environment defaults (`LANG`); the spec's `[config] env` overrides them.
    pub env: Vec<(String, String)>,
    /// The login shell chosen.
    pub shell: String,
    /// Whether passwordless sudo was set up.
    pub sudo: bool,
}

/// Why the account cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The account's name or uid is taken by an existing account of the image.
    #[error(
        "the workspace account `{name}` (uid {uid}) clashes with the image's existing account `{existing}` (uid {existing_uid}) in /etc/passwd (choose another {what} in [account])"
    )]
    UserClash {
        /// The account's name.
        name: String,
        /// The account's uid.
        uid: u32,
        /// The existing account's name.
        existing: String,
        /// The existing account's uid.
        existing_uid: u32,
        /// `name` or `uid`: what to change.
        what: &'static str,
    },
    /// A group of the account's name exists with another gid.
    #[error(
        "the workspace account's group `{name}` (gid {gid}) clashes with the image's existing group `{existing}` (gid {existing_gid}) in /etc/group (set account.gid = {existing_gid} or choose another name)"
    )]
    GroupClash {
        /// The account's group name.
        name: String,
        /// The account's gid.
        gid: u32,
        /// The existing group's name.
        existing: String,
        /// The existing group's gid.
        existing_gid: u32,
    },
    /// A file of the image could not be read.
    #[error("cannot read {path} of the image")]
    Read {
        /// The image path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A generated path is not a valid image path.
    #[error("`{0}` is not a usable path in the image")]
    Path(String),
}

fn image_path(p: &str) -> Result<ImagePath, AccountError> {
    ImagePath::new(p).map_err(|_| AccountError::Path(p.to_owned()))
}

fn read_text(files: &FileIndex, path: &str) -> Result<Option<String>, AccountError> {
    files
        .read(path)
        .map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
        .map_err(|source| AccountError::Read {
            path: path.to_owned(),
            source,
        })
}

/// A generated file that keeps the owner and mode of the file it replaces, if any.
fn file_like(
    files: &FileIndex,
    path: &str,
    text: String,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<Entry, AccountError> {
    let mut e = Entry::inline_file(image_path(path)?, mode, text.into_bytes());
    e.uid = uid;
    e.gid = gid;
    if let Some(Resolved { node, .. }) = files.resolve(path)
        && node.is_file()
    {
        e.mode = node.mode;
        e.uid = node.uid;
        e.gid = node.gid;
    }
    Ok(e)
}

/// The login shell: the account's own, else `/bin/bash` when bash is in the image, else the
/// first bash on `PATH`, else `/bin/sh`.
fn choose_shell(account: &Account, files: &FileIndex, path_env: &str) -> String {
    if let Some(shell) = &account.shell {
        return shell.clone();
    }
    if files.resolve("/bin/bash").is_some_and(|r| r.node.is_file()) {
        return "/bin/bash".to_owned();
    }
    match files.which("bash", path_env) {
        Some((found, _)) => found,
        None => "/bin/sh".to_owned(),
    }
}

/// Generates the account's files for an image whose content so far is `files`. `path_env` is
/// the image's `PATH` (or `None` for the default); `coder` adds what a Coder workspace needs
/// beyond the account (a `/tmp` when the image has none).
pub fn account_files(
    account: &Account,
    files: &FileIndex,
    path_env: Option<&str>,
    coder: bool,
) -> Result<AccountFiles, AccountError> {
    let path_env = path_env.unwrap_or(DEFAULT_PATH);
    let mut entries = Vec::new();
    let shell = choose_shell(account, files, path_env);

    // /etc/passwd
    let passwd_text = read_text(files, "/etc/passwd")?
        .unwrap_or_else(|| "root:x:0:0:root:/root:/bin/sh\n".to_owned());
    let mut adopted = false;
    for e in passwd::parse_passwd(&passwd_text) {
        let same_name = e.name == account.name;
        let same_uid = e.uid == account.uid;
        if same_name && same_uid {
            adopted = true;
        } else if same_name || same_uid {
            return Err(AccountError::UserClash {
                name: account.name.clone(),
                uid: account.uid,
                existing: e.name,
                existing_uid: e.uid,
                what: if same_name { "name" } else { "uid" },
            });
        }
    }
    let passwd_text = if adopted {
        passwd_text
    } else {
        append_line(
            &passwd_text,
            &format!(
                "{}:x:{}:{}:{}:{}:{}",
                account.name, account.uid, account.gid, account.gecos, account.home, shell
            ),
        )
    };
    entries.push(file_like(
        files,
        "/etc/passwd",
        passwd_text.clone(),
        0o644,
        0,
        0,
    )?);

    // /etc/group: the primary group, then membership of the supplementary groups.
    let mut group_text =
        read_text(files, "/etc/group")?.unwrap_or_else(|| "root:x:0:\n".to_owned());
    let groups = passwd::parse_group(&group_text);
    let mut new_groups: Vec<String> = Vec::new();
    let by_gid = groups.iter().find(|g| g.gid == account.gid);
    if let Some(g) = groups
        .iter()
        .find(|g| g.name == account.name && g.gid != account.gid)
    {
        return Err(AccountError::GroupClash {
            name: account.name.clone(),
            gid: account.gid,
            existing: g.name.clone(),
            existing_gid: g.gid,
        });
    }
    if by_gid.is_none() {
        group_text = append_line(&group_text, &format!("{}:x:{}:", account.name, account.gid));
        new_groups.push(account.name.clone());
    }
    let mut used: Vec<u32> = groups.iter().map(|g| g.gid).collect();
    used.push(account.gid);
    for name in &account.groups {
        if groups.iter().any(|g| &g.name == name) {
            group_text = passwd::add_member(&group_text, name, &account.name, 3);
        } else {
            let gid = (1001..).find(|g| !used.contains(g)).unwrap_or(u32::MAX);
            used.push(gid);
            group_text = append_line(&group_text, &format!("{name}:x:{gid}:{}", account.name));
            new_groups.push(name.clone());
        }
    }
    entries.push(file_like(files, "/etc/group", group_text, 0o644, 0, 0)?);

    // /etc/shadow: a locked password (`*`), no ageing (an empty last-change field, so PAM never
    // forces a password change that would break sudo).
    let shadow_gid = groups
        .iter()
        .find(|g| g.name == "shadow")
        .map(|g| g.gid)
        .unwrap_or(0);
    let shadow_mode = if shadow_gid == 0 { 0o600 } else { 0o640 };
    let shadow_line = |name: &str| format!("{name}:*::0:99999:7:::");
    let shadow_text = match read_text(files, "/etc/shadow")? {
        Some(existing) if passwd::names(&existing).contains(&account.name.as_str()) => existing,
        Some(existing) => append_line(&existing, &shadow_line(&account.name)),
        // No shadow file yet: one locked entry for every account of the final passwd.
        None => passwd::parse_passwd(&passwd_text)
            .iter()
            .map(|p| format!("{}\n", shadow_line(&p.name)))
            .collect(),
    };
    entries.push(file_like(
        files,
        "/etc/shadow",
        shadow_text,
        shadow_mode,
        0,
        shadow_gid,
    )?);

    // /etc/gshadow, only where the image keeps one.
    if let Some(mut gshadow) = read_text(files, "/etc/gshadow")? {
        let present: Vec<String> = passwd::names(&gshadow)
            .into_iter()
            .map(str::to_owned)
            .collect();
        for g in &new_groups {
            if !present.contains(g) {
                let members = if *g == account.name {
                    String::new()
                } else {
                    account.name.clone()
                };
                gshadow = append_line(&gshadow, &format!("{g}:!::{members}"));
            }
        }
        for g in &account.groups {
            if present.contains(g) {
                gshadow = passwd::add_member(&gshadow, g, &account.name, 3);
            }
        }
        entries.push(file_like(
            files,
            "/etc/gshadow",
            gshadow,
            shadow_mode,
            0,
            shadow_gid,
        )?);
    }

    // The home directory, owned by the account, with the skeleton files the image has.
    let home_path = image_path(&account.home)?;
    let mut home = Entry::directory(home_path.clone(), 0o755);
    if let Some(r) = files.get(home_path.as_str())
        && r.is_dir()
    {
        home.mode = r.mode;
    }
    home.uid = account.uid;
    home.gid = account.gid;
    entries.push(home);
    if let Some(skel) = files.resolve("/etc/skel")
        && skel.node.is_dir()
    {
        for (path, _) in files.descendants(&skel.path) {
            let rel = &path[skel.path.len()..];
            let dest = format!("{}{rel}", account.home);
            if files.get(&dest).is_some() {
                continue; // the image's own file in the home wins
            }
            // Resolve hard links; keep symbolic links as links.
            let node = match files.get(&path) {
                Some(n) if matches!(n.kind, NodeKind::Symlink(_)) => n.clone(),
                Some(_) => match files.resolve(&path) {
                    Some(r) => r.node,
                    None => continue,
                },
                None => continue,
            };
            let dest = image_path(&dest)?;
            let mut e = match node.kind {
                NodeKind::Directory => Entry::directory(dest, node.mode),
                NodeKind::Symlink(target) => Entry::symlink(dest, target),
                NodeKind::File {
                    size,
                    data: Some(data),
                } => {
                    let mut e = Entry::directory(dest, node.mode);
                    e.kind = EntryKind::File {
                        content: data,
                        size,
                    };
                    e
                }
                _ => continue,
            };
            e.uid = account.uid;
            e.gid = account.gid;
            entries.push(e);
        }
    }

    // Passwordless sudo through a drop-in, when sudo is in the image (or asked for).
    let sudo_in_image = files.which("sudo", path_env).is_some()
        || files
            .resolve("/usr/bin/sudo")
            .is_some_and(|r| r.node.is_file());
    let sudo = account.sudo.unwrap_or(sudo_in_image);
    if sudo {
        if files.get("/etc/sudoers.d").is_none() {
            entries.push(Entry::directory(image_path("/etc/sudoers.d")?, 0o750));
        }
        let rule = format!(
            "# The workspace account, written by strata.\n{} ALL=(ALL:ALL) NOPASSWD:ALL\n",
            account.name
        );
        entries.push(Entry::inline_file(
            image_path(&format!("/etc/sudoers.d/strata-{}", account.name))?,
            0o440,
            rule.into_bytes(),
        ));
    }

    if coder && files.resolve("/tmp").is_none() {
        entries.push(Entry::directory(image_path("/tmp")?, 0o1777));
    }

    Ok(AccountFiles {
        entries,
        user: account.uid.to_string(),
        workdir: account.home.clone(),
        env: vec![("LANG".to_owned(), "C.UTF-8".to_owned())],
        shell,
        sudo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Node;
    use strata_fstree::Content;

    fn account() -> Account {
        Account {
            name: "coder".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/coder".into(),
            shell: None,
            sudo: None,
            groups: vec!["docker".into(), "sudo".into()],
            gecos: String::new(),
        }
    }

    fn file(data: &str, mode: u32) -> Node {
        Node {
            kind: NodeKind::File {
                size: data.len() as u64,
                data: Some(Content::Inline(data.as_bytes().into())),
            },
            mode,
            uid: 0,
            gid: 0,
        }
    }

    fn text(out: &AccountFiles, path: &str) -> String {
        let e = out
            .entries
            .iter()
            .find(|e| e.path.as_str() == path)
            .unwrap_or_else(|| panic!("no {path}"));
        match &e.kind {
            EntryKind::File {
                content: Content::Inline(b),
                ..
            } => String::from_utf8_lossy(b).into_owned(),
            other => panic!("{path} is {other:?}"),
        }
    }

    fn debian_like() -> FileIndex {
        let mut f = FileIndex::new();
        f.insert(
            "etc/passwd",
            file(
                "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
                0o644,
            ),
        );
        f.insert(
            "etc/group",
            file("root:x:0:\nshadow:x:42:\nsudo:x:27:\n", 0o644),
        );
        let mut shadow = file("root:*:19000:0:99999:7:::\n", 0o640);
        shadow.gid = 42;
        f.insert("etc/shadow", shadow);
        f.insert("etc/skel/.bashrc", file("# bashrc\n", 0o644));
        f.insert("bin/bash", file("elf", 0o755));
        f.insert("usr/bin/sudo", file("elf", 0o4755));
        f
    }

    #[test]
    fn merges_with_the_image_databases() {
        let out = account_files(&account(), &debian_like(), None, true).expect("account");
        assert_eq!(
            text(&out, "etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\ncoder:x:1000:1000::/home/coder:/bin/bash\n"
        );
        assert_eq!(
            text(&out, "etc/group"),
            "root:x:0:\nshadow:x:42:\nsudo:x:27:coder\ncoder:x:1000:\ndocker:x:1001:coder\n"
        );
        assert_eq!(
            text(&out, "etc/shadow"),
            "root:*:19000:0:99999:7:::\ncoder:*::0:99999:7:::\n"
        );
        let shadow = out
            .entries
            .iter()
            .find(|e| e.path.as_str() == "etc/shadow")
            .expect("shadow");
        assert_eq!((shadow.mode, shadow.gid), (0o640, 42));
        let bashrc = out
            .entries
            .iter()
            .find(|e| e.path.as_str() == "home/coder/.bashrc")
            .expect("skeleton copied");
        assert_eq!((bashrc.uid, bashrc.gid), (1000, 1000));
        assert!(out.sudo);
        assert!(
            text(&out, "etc/sudoers.d/strata-coder").contains("coder ALL=(ALL:ALL) NOPASSWD:ALL")
        );
        assert_eq!(out.shell, "/bin/bash");
        assert_eq!(out.user, "1000");
        assert!(
            out.entries
                .iter()
                .any(|e| e.path.as_str() == "tmp" && e.mode == 0o1777)
        );
    }

    #[test]
    fn bare_images_get_root_and_sh() {
        let mut acct = account();
        acct.groups.clear();
        let out = account_files(&acct, &FileIndex::new(), None, false).expect("account");
        assert_eq!(
            text(&out, "etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ncoder:x:1000:1000::/home/coder:/bin/sh\n"
        );
        assert_eq!(
            text(&out, "etc/shadow"),
            "root:*::0:99999:7:::\ncoder:*::0:99999:7:::\n"
        );
        assert!(!out.sudo);
        assert!(!out.entries.iter().any(|e| e.path.as_str() == "tmp"));
    }

    #[test]
    fn clashes_name_both_accounts() {
        let mut f = debian_like();
        f.insert(
            "etc/passwd",
            file(
                "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n",
                0o644,
            ),
        );
        let err = account_files(&account(), &f, None, true).expect_err("uid clash");
        let msg = err.to_string();
        assert!(
            msg.contains("`coder` (uid 1000)") && msg.contains("`debian` (uid 1000)"),
            "{msg}"
        );

        let mut acct = account();
        acct.name = "nobody".into();
        let err = account_files(&acct, &debian_like(), None, true).expect_err("name clash");
        assert!(err.to_string().contains("`nobody` (uid 65534)"), "{err}");
    }
}
