//! `[services] enable`: the links `systemctl enable` would make, read from the units'
//! `[Install]` sections in the image (`WantedBy=` → `TARGET.wants/UNIT`, `RequiredBy=` →
//! `TARGET.requires/UNIT`, `Alias=` → `ALIAS`, `Also=` enables those units too), all under
//! `/etc/systemd/system`, each pointing at the unit's file.

use std::collections::BTreeSet;

use strata_fstree::{Entry, ImagePath};

use crate::FileIndex;
use crate::index::NodeKind;

/// Where units are looked up, in systemd's order of precedence.
const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// Suffixes of unit types that `systemctl enable` takes.
const UNIT_TYPES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".swap",
];

/// A service that cannot be enabled.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No unit file of that name in the image.
    #[error("no unit `{unit}` in the image (units: {known})")]
    Unknown {
        /// The unit asked for.
        unit: String,
        /// The units the image has, or `none`.
        known: String,
    },
    /// A unit file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The unit file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A link name from an `[Install]` section is not a path in the image.
    #[error("{unit}: bad [Install] entry `{value}`")]
    Bad {
        /// The unit.
        unit: String,
        /// The entry.
        value: String,
    },
}

/// The unit name of a service as written: `docker` is `docker.service`.
pub fn unit_name(name: &str) -> String {
    if UNIT_TYPES.iter().any(|t| name.ends_with(t)) {
        name.to_owned()
    } else {
        format!("{name}.service")
    }
}

/// `[services] disable`: whiteouts for every link under `/etc/systemd/system` that enables
/// one of `units` (named like it, or pointing at it), whoever made the link (a package's
/// `postinst` in a configure layer, or an `enable` of the same spec). They go in the
/// customisation layer, above everything that could have made such a link. An unknown unit is
/// an error naming the units there are.
pub fn disable_whiteouts(
    files: &FileIndex,
    disable: &[String],
) -> Result<Vec<Entry>, ServiceError> {
    let known = units(files);
    let mut out = Vec::new();
    for name in disable {
        let unit = unit_name(name);
        if !known.contains(&unit) {
            return Err(ServiceError::Unknown {
                unit,
                known: known.join(", "),
            });
        }
        let pointing = format!("/{unit}");
        for (path, node) in files.descendants("etc/systemd/system") {
            let NodeKind::Symlink(target) = &node.kind else {
                continue;
            };
            let (dir, file) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if file != unit && !target.ends_with(&pointing) {
                continue;
            }
            let whiteout = format!("{dir}/{}", strata_oci::whiteout::name_for(file));
            if let Ok(p) = ImagePath::new(&whiteout) {
                out.push(Entry::inline_file(p, 0o644, Vec::new()));
            }
        }
    }
    Ok(out)
}

/// Every unit file name in the image, sorted.
pub fn units(files: &FileIndex) -> Vec<String> {
    let mut out = BTreeSet::new();
    for dir in UNIT_DIRS {
        for (path, _) in files.descendants(dir) {
            let rel = &path[dir.len() + 2..];
            if !rel.contains('/') && UNIT_TYPES.iter().any(|t| rel.ends_with(t)) {
                out.insert(rel.to_owned());
            }
        }
    }
    out.into_iter().collect()
}

/// The path of a unit's file (`/usr/lib/systemd/system/docker.service`) and its text.
fn find(files: &FileIndex, unit: &str) -> Result<Option<(String, String)>, ServiceError> {
    // A template instance (`getty@tty1.service`) is read from its template.
    let template = match unit.split_once('@') {
        Some((prefix, rest)) if !rest.starts_with('.') => {
            let suffix = rest.rfind('.').map_or("", |i| &rest[i..]);
            Some(format!("{prefix}@{suffix}"))
        }
        _ => None,
    };
    for name in std::iter::once(unit.to_owned()).chain(template) {
        for dir in UNIT_DIRS {
            let path = format!("/{dir}/{name}");
            match files.read(&path) {
                Ok(Some(bytes)) => {
                    return Ok(Some((path, String::from_utf8_lossy(&bytes).into_owned())));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ServiceError::Read {
                        path,
                        message: e.to_string(),
                    });
                }
            }
        }
    }
    Ok(None)
}

/// The values of `key` in a unit's `[Install]` section (space-separated, every line).
fn install_values(text: &str, key: &str) -> Vec<String> {
    let mut in_install = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            out.extend(v.split_whitespace().map(str::to_owned));
        }
    }
    out
}

/// The symbolic links that enable `enable` (names as written: `docker`, `ssh.socket`), with
/// the units their `Also=` names.
pub fn enable_links(files: &FileIndex, enable: &[String]) -> Result<Vec<Entry>, ServiceError> {
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    let mut todo: Vec<String> = enable.iter().map(|n| unit_name(n)).collect();
    while let Some(unit) = todo.pop() {
        if !done.insert(unit.clone()) {
            continue;
        }
        let Some((path, text)) = find(files, &unit)? else {
            let known = units(files);
            return Err(ServiceError::Unknown {
                unit,
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            });
        };
        // An enabled template gets its default instance.
        let mut name = unit.clone();
        if let Some((prefix, rest)) = unit.split_once('@')
            && rest.starts_with('.')
            && let Some(instance) = install_values(&text, "DefaultInstance").first()
        {
            name = format!("{prefix}@{instance}{rest}");
        }
        let mut link = |rel: String| -> Result<(), ServiceError> {
            let p = ImagePath::new(&format!("/etc/systemd/system/{rel}")).map_err(|_| {
                ServiceError::Bad {
                    unit: unit.clone(),
                    value: rel.clone(),
                }
            })?;
            // A unit already in /etc/systemd/system needs no alias link to itself.
            if format!("/{}", p.as_str()) != path {
                out.push(Entry::symlink(p, path.clone()));
            }
            Ok(())
        };
        for target in install_values(&text, "WantedBy") {
            link(format!("{target}.wants/{name}"))?;
        }
        for target in install_values(&text, "RequiredBy") {
            link(format!("{target}.requires/{name}"))?;
        }
        for alias in install_values(&text, "Alias") {
            if alias.contains('/') {
                return Err(ServiceError::Bad {
                    unit: unit.clone(),
                    value: alias,
                });
            }
            link(alias)?;
        }
        todo.extend(
            install_values(&text, "Also")
                .into_iter()
                .map(|n| unit_name(&n)),
        );
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(files: &[(&str, &str)]) -> FileIndex {
        let entries: Vec<Entry> = files
            .iter()
            .map(|(p, text)| {
                Entry::inline_file(
                    ImagePath::new(p).expect("path"),
                    0o644,
                    text.as_bytes().to_vec(),
                )
            })
            .collect();
        FileIndex::from_entries(entries.iter())
    }

    #[test]
    fn links_follow_the_install_section() {
        let files = index(&[
            (
                "/usr/lib/systemd/system/docker.service",
                "[Unit]\nDescription=d\n[Service]\nExecStart=/usr/bin/dockerd\n[Install]\nWantedBy=multi-user.target\nAlso=docker.socket\n",
            ),
            (
                "/usr/lib/systemd/system/docker.socket",
                "[Socket]\nListenStream=/run/docker.sock\n[Install]\nWantedBy=sockets.target\n",
            ),
            (
                "/usr/lib/systemd/system/ssh.service",
                "[Install]\nWantedBy=multi-user.target\nRequiredBy=x.target\nAlias=sshd.service\n",
            ),
            (
                "/usr/lib/systemd/system/getty@.service",
                "[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
            ),
        ]);
        let links = enable_links(
            &files,
            &["docker".into(), "ssh".into(), "getty@.service".into()],
        )
        .expect("links");
        let shown: Vec<(String, String)> = links
            .iter()
            .map(|e| match &e.kind {
                strata_fstree::EntryKind::Symlink { target } => {
                    (e.path.as_str().to_owned(), target.clone())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        let d = "/usr/lib/systemd/system";
        assert_eq!(
            shown,
            [
                (
                    "etc/systemd/system/getty.target.wants/getty@tty1.service".into(),
                    format!("{d}/getty@.service")
                ),
                (
                    "etc/systemd/system/multi-user.target.wants/docker.service".into(),
                    format!("{d}/docker.service")
                ),
                (
                    "etc/systemd/system/multi-user.target.wants/ssh.service".into(),
                    format!("{d}/ssh.service")
                ),
                (
                    "etc/systemd/system/sockets.target.wants/docker.socket".into(),
                    format!("{d}/docker.socket")
                ),
                (
                    "etc/systemd/system/sshd.service".into(),
                    format!("{d}/ssh.service")
                ),
                (
                    "etc/systemd/system/x.target.requires/ssh.service".into(),
                    format!("{d}/ssh.service")
                ),
            ]
        );
        let err = enable_links(&files, &["dockr".into()]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no unit `dockr.service` in the image (units: docker.service, docker.socket, getty@.service, ssh.service)"
        );
    }
}
