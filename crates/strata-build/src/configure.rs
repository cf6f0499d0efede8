//! The Debian *configure layer*: the packages' maintainer scripts run inside the image.
//!
//! After the package layers and the customisation layer are written, an image with Debian
//! content (and `configure` not false in any Debian half, and the host's architecture) is
//! unpacked into the store ([`strata_sandbox::prepare_rootfs`]) and, in a sandbox with no
//! network, its own `dpkg` configures every package: the status file marks them `unpacked`,
//! each `preinst install` runs, then `dpkg --configure -a` runs every `postinst` in dependency
//! order (and pending triggers), with `DEBIAN_FRONTEND=noninteractive`, a `policy-rc.d` that
//! forbids starting services and `SOURCE_DATE_EPOCH` set (Python then writes hash-checked,
//! reproducible bytecode).
//!
//! What the scripts created, changed or deleted (the overlay's upper directory) becomes one
//! layer above the others, deletions as OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`). Files that
//! differ from run to run by nature (logs, `*-old` backups, ldconfig's aux cache, the machine
//! id) are left out; the layer writer clamps every mtime to `SOURCE_DATE_EPOCH`.
//!
//! The layer is cached in the store by the hash of the layers below it (the exact package set
//! and the customisation content), so an unchanged image runs no script. Without a usable
//! sandbox, or for a foreign architecture, the image keeps the declarative customisation layer
//! alone and a note says so on stderr.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use strata_fstree::{Content, Entry, EntryKind, ImagePath, Tree};
use strata_sandbox::changes::{Change, scan_upper};
use strata_sandbox::{
    Command, IdMapping, LayerFile, Sandbox, SandboxError, Stdio, User, prepare_rootfs, remove_tree,
    unpack_rootfs,
};
use strata_source::{StoreObject, hash_parts};
use strata_spec::{Part, Spec};
use strata_store::Store;

use crate::{BuildError, BuildOptions, LayerRecord, LayerReport, PlannedLayer, Reporter};

/// Version of what the configure step does; bump it when the script, the environment or the
/// filtering changes so old configure layers are not reused.
const CONFIGURE_FORMAT: &str = "configure-v2";

/// The `part` of the configure layer in reports and history.
pub(crate) const PART: &str = "configure";

/// Runs inside the image: marks the packages unpacked, runs `preinst install`, configures
/// everything, processes pending triggers.
const SCRIPT: &str = r#"set -e
exec </dev/null
mkdir -p /usr/sbin
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
sed -i 's/^Status: install ok installed$/Status: install ok unpacked/' /var/lib/dpkg/status
# The declarative layer's certificate links: update-ca-certificates makes them afresh, with
# the hash links, as on a fresh system.
if [ -x /usr/sbin/update-ca-certificates ] && [ -d /etc/ssl/certs ]; then
    find /etc/ssl/certs -maxdepth 1 -type l -delete
fi
arch=$(dpkg --print-architecture)
for f in /var/lib/dpkg/info/*.preinst; do
    [ -e "$f" ] || continue
    p=${f##*/}
    p=${p%.preinst}
    echo "strata: $p preinst install"
    DPKG_MAINTSCRIPT_PACKAGE=${p%%:*} DPKG_MAINTSCRIPT_NAME=preinst \
        DPKG_MAINTSCRIPT_ARCH=$arch DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT=1 DPKG_ROOT= \
        "$f" install
done
# The spec's debconf answers (strata_debian::system::DEBCONF_SELECTIONS), for the scripts to act on.
if [ -s /var/lib/strata/debconf.selections ]; then
    debconf-set-selections /var/lib/strata/debconf.selections
fi
dpkg --configure -a
dpkg --triggers-only -a
# [services] disable: the links of those units, whoever made them.
if [ -s /var/lib/strata/services.disable ]; then
    while read -r u; do
        find /etc/systemd/system \( -name "$u" -o -lname "*/$u" \) -type l -delete
    done </var/lib/strata/services.disable
fi
rm -f /usr/sbin/policy-rc.d
"#;

/// Put before [`SCRIPT`]: the image is being built, not booted, and `ischroot` must say so,
/// as it does under debootstrap and mmdebstrap (libc6's postinst otherwise runs `telinit u`
/// and sleeps a second). The stub lives in the sandbox's own `/tmp`, which is not part of the
/// image.
const IN_CHROOT: &str = r#"mkdir -p /tmp/.strata-bin
printf '#!/bin/sh\nexit 0\n' >/tmp/.strata-bin/ischroot
chmod 755 /tmp/.strata-bin/ischroot
export PATH="/tmp/.strata-bin:$PATH"
"#;

/// A configure step failure.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// The sandbox failed in a way that is not "unavailable".
    #[error("configuring the Debian packages: {context}")]
    Sandbox {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: SandboxError,
    },
    /// The scripts failed.
    #[error(
        "configuring the Debian packages: `dpkg --configure -a` in the image exited with status \
         {status}; the end of its output:\n{tail}"
    )]
    Scripts {
        /// The exit status.
        status: i32,
        /// The last lines of the output.
        tail: String,
    },
    /// A host file operation failed.
    #[error("configuring the Debian packages: cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A changed path is not a valid image path.
    #[error("configuring the Debian packages: `{path}` is not a valid image path: {message}")]
    Path {
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ConfigureError {
    let path = path.to_owned();
    move |source| ConfigureError::Io {
        action,
        path,
        source,
    }
}

/// The OCI architecture of this machine (the one mapping, in strata-spec).
fn host_architecture() -> &'static str {
    strata_spec::host_architecture()
}

/// Whether the spec asks for configured Debian content: some half has a `debian` section and
/// none sets `configure = false`.
pub(crate) fn requested(spec: &Spec) -> bool {
    let sections: Vec<_> = [Part::Base, Part::User]
        .into_iter()
        .filter_map(|p| spec.half(p).debian.as_ref())
        .collect();
    !sections.is_empty() && sections.iter().all(|d| d.configure.unwrap_or(true))
}

/// Whether the build will try to configure: requested, and the image runs on this machine.
pub(crate) fn wanted(spec: &Spec) -> bool {
    requested(spec) && spec.image.architecture == host_architecture()
}

/// Adds the configure layer on top of `layers` when the spec wants one (see the module
/// documentation). `Ok(None)`: the image stays declarative.
pub(crate) fn configure(
    spec: &Spec,
    store: &Store,
    opts: &BuildOptions,
    planned: &[PlannedLayer],
    layers: &[LayerReport],
    reporter: &dyn Reporter,
) -> Result<Option<LayerReport>, BuildError> {
    if !requested(spec) {
        return Ok(None);
    }
    let holds = |path: &str| {
        planned
            .iter()
            .flat_map(|l| &l.objects)
            .flat_map(|o| o.tree.entries())
            .any(|e| e.path.as_str() == path)
    };
    if !holds("usr/bin/dpkg") || !holds("usr/bin/sh") {
        eprintln!(
            "strata: note: the image has no dpkg or /bin/sh (`essential = false`?), so the Debian \
             maintainer scripts are not run; the image holds the declarative system files instead"
        );
        return Ok(None);
    }
    let host = host_architecture();
    if spec.image.architecture != host {
        eprintln!(
            "strata: note: the Debian maintainer scripts are not run for a {} image on a {host} \
             machine; the image holds the declarative system files instead",
            spec.image.architecture
        );
        return Ok(None);
    }
    let index = layers.len() + 1;
    let sde = opts.source_date_epoch.to_string();
    let key = hash_parts(
        [
            CONFIGURE_FORMAT.as_bytes(),
            super::LAYER_FORMAT.as_bytes(),
            opts.compression.as_str().as_bytes(),
            sde.as_bytes(),
            spec.image.architecture.as_bytes(),
        ]
        .into_iter()
        .chain(layers.iter().map(|l| l.diff_id.as_bytes())),
    );
    let lookup = |store: &Store| -> Result<Option<LayerRecord>, BuildError> {
        match store.layer_record::<LayerRecord>(&key)? {
            Some(rec) if store.has_blob(&rec.digests.digest)? => Ok(Some(rec)),
            _ => Ok(None),
        }
    };
    let report = |record: LayerRecord, cached: bool| LayerReport {
        digest: record.digests.digest.clone(),
        diff_id: record.digests.diff_id.clone(),
        size: record.digests.size,
        uncompressed_size: record.digests.uncompressed_size,
        part: PART,
        objects: vec![PART.to_owned()],
        cached,
    };
    if let Some(rec) = lookup(store)? {
        reporter.layer_done(index, 0, true);
        return Ok(Some(report(rec, true)));
    }
    let _lock = store.lock_key(&format!("configure-{key}"))?;
    if let Some(rec) = lookup(store)? {
        reporter.layer_done(index, 0, true);
        return Ok(Some(report(rec, true)));
    }

    reporter.phase("configuring Debian packages");
    let ids = IdMapping::detect();
    let blobs = layers
        .iter()
        .map(|l| {
            Ok(LayerFile {
                path: store.blob_path(&l.digest)?,
                compression: opts.compression,
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    // The unpacked image and the scripts' changes are thrown away after this step: they go
    // to memory when there is room, where file creation and dpkg's fsyncs cost next to nothing.
    let image_bytes: u64 = layers.iter().map(|l| l.uncompressed_size).sum();
    let pid = std::process::id();
    let (rootfs, work) = match strata_sandbox::memory_scratch(&ids, image_bytes * 2 + (512 << 20)) {
        Some(mem) => {
            let rootfs = mem.join(format!("{pid}-rootfs-{}", &key[..16]));
            if fs::symlink_metadata(&rootfs).is_ok() {
                remove_tree(&ids, &rootfs).map_err(|e| sandbox_err("clearing an old run", e))?;
            }
            unpack_rootfs(&rootfs, &blobs, &ids)
                .map_err(|source| sandbox_err("unpacking the image", source))?;
            (rootfs, mem.join(format!("{pid}-configure-{}", &key[..16])))
        }
        None => {
            let rootfs_key = format!("configure-{}", &key[..32]);
            let rootfs = prepare_rootfs(store, &rootfs_key, &blobs, &ids)
                .map_err(|source| sandbox_err("unpacking the image", source))?;
            let scratch = store.root().join("tmp");
            (
                rootfs,
                scratch.join(format!("configure-{pid}-{}", &key[..16])),
            )
        }
    };
    let result = run_and_write(
        spec, store, opts, &ids, &rootfs, &work, index, &key, reporter,
    );
    let _ = remove_tree(&ids, &work);
    let _ = remove_tree(&ids, &rootfs);
    match result? {
        Some(record) => {
            store.put_layer_record(&key, &record)?;
            Ok(Some(report(record, false)))
        }
        None => Ok(None),
    }
}

fn sandbox_err(context: &str, source: SandboxError) -> BuildError {
    BuildError::Configure(ConfigureError::Sandbox {
        context: context.to_owned(),
        source,
    })
}

/// Runs the scripts over `rootfs` (changes kept in `work`) and writes the layer. `Ok(None)`
/// when the sandbox is not usable on this machine.
#[allow(clippy::too_many_arguments)]
fn run_and_write(
    _spec: &Spec,
    store: &Store,
    opts: &BuildOptions,
    ids: &IdMapping,
    rootfs: &Path,
    work: &Path,
    index: usize,
    key: &str,
    reporter: &dyn Reporter,
) -> Result<Option<LayerRecord>, BuildError> {
    if fs::symlink_metadata(work).is_ok() {
        remove_tree(ids, work).map_err(|e| sandbox_err("clearing an old run", e))?;
    }
    fs::create_dir_all(work).map_err(|e| BuildError::Configure(io_err("create", work)(e)))?;
    let scratch = store.root().join("tmp");
    let mut sandbox = Sandbox::new(vec![rootfs.to_owned()], scratch);
    sandbox.ids = ids.clone();
    sandbox.keep_changes = Some(work.to_owned());
    let log_path = work.join("configure.log");
    let log = fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&log_path)
        .map_err(|e| BuildError::Configure(io_err("create", &log_path)(e)))?;
    let dup = log
        .try_clone()
        .map_err(|e| BuildError::Configure(io_err("open", &log_path)(e)))?;
    let status = sandbox.run(Command {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("{IN_CHROOT}{SCRIPT}"),
        ],
        env: script_env(opts.source_date_epoch),
        user: User::root(),
        workdir: "/".into(),
        tty: false,
        stdin: Stdio::Null,
        stdout: Stdio::Fd(dup.into()),
        stderr: Stdio::Fd(
            log.try_clone()
                .map_err(|e| BuildError::Configure(io_err("open", &log_path)(e)))?
                .into(),
        ),
    });
    let status = match status {
        Ok(s) => s,
        Err(
            e @ (SandboxError::NoUserNamespaces(_)
            | SandboxError::Setup(_)
            | SandboxError::Sys { .. }
            | SandboxError::IdMap(_)),
        ) => {
            eprintln!(
                "strata: note: the Debian maintainer scripts were not run ({}); the image holds \
                 the declarative system files instead",
                error_chain(&e)
            );
            return Ok(None);
        }
        Err(e) => return Err(sandbox_err("running dpkg in the image", e)),
    };
    if status.code() != 0 {
        return Err(BuildError::Configure(ConfigureError::Scripts {
            status: status.code(),
            tail: tail(log, 40),
        }));
    }
    let upper = work.join("upper");
    let changes = scan_upper(&upper).map_err(|e| sandbox_err("reading the changes", e))?;
    let entries = layer_entries(&upper, &changes, ids)?;
    let planned = PlannedLayer {
        part: PART,
        objects: vec![StoreObject {
            id: PART.into(),
            tree: Tree::from_entries(entries),
            references: Vec::new(),
            cache_key: key.to_owned(),
        }],
        parents: Vec::new(),
    };
    let (record, _) = super::build_layer(index, &planned, store, opts, reporter)?;
    Ok(Some(record))
}

/// The environment of the scripts.
fn script_env(source_date_epoch: i64) -> Vec<String> {
    vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "HOME=/root".into(),
        "LC_ALL=C.UTF-8".into(),
        "DEBIAN_FRONTEND=noninteractive".into(),
        "DEBCONF_NONINTERACTIVE_SEEN=true".into(),
        format!("SOURCE_DATE_EPOCH={source_date_epoch}"),
    ]
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The last `n` lines of the log.
fn tail(mut log: fs::File, n: usize) -> String {
    let mut text = String::new();
    let _ = log.seek(SeekFrom::Start(0));
    let _ = log.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a changed path differs from run to run by nature (or is the step's own), so it is
/// left out of the layer.
fn is_noise(path: &str) -> bool {
    const EXACT: [&str; 8] = [
        "etc/machine-id",
        "var/lib/dbus/machine-id",
        "usr/sbin/policy-rc.d",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/cache/ldconfig/aux-cache",
        "var/lib/dpkg/triggers/Lock",
        "var/lib/dpkg/lock-frontend",
    ];
    if EXACT.contains(&path) {
        return true;
    }
    let under = |dir: &str| path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    if under("var/log/apt") || under("tmp") || under("var/tmp") || under("run") {
        return true;
    }
    (path.starts_with("var/cache/debconf/") || path.starts_with("var/lib/dpkg/"))
        && path.ends_with("-old")
}

/// Maps an id of the host (as the upper directory's files are owned) back to the image's.
fn inside_id(ranges: &[strata_sandbox::IdRange], id: u32) -> u32 {
    ranges
        .iter()
        .find(|r| id >= r.outside && id - r.outside < r.count)
        .map_or(id, |r| r.inside + (id - r.outside))
}

fn image_path(rel: &Path) -> Result<ImagePath, BuildError> {
    let s = rel.to_string_lossy();
    ImagePath::new(&s).map_err(|e| {
        BuildError::Configure(ConfigureError::Path {
            path: s.into_owned(),
            message: e.to_string(),
        })
    })
}

/// The layer's entries for the run's changes.
fn layer_entries(
    upper: &Path,
    changes: &[Change],
    ids: &IdMapping,
) -> Result<Vec<Entry>, BuildError> {
    let mut out = Vec::new();
    for change in changes {
        match change {
            Change::Upsert(rel) => {
                let rel_str = rel.to_string_lossy();
                if is_noise(&rel_str) {
                    continue;
                }
                let host = upper.join(rel);
                let meta = fs::symlink_metadata(&host)
                    .map_err(|e| BuildError::Configure(io_err("stat", &host)(e)))?;
                let ft = meta.file_type();
                let kind = if ft.is_dir() {
                    EntryKind::Directory
                } else if ft.is_symlink() {
                    let target = fs::read_link(&host)
                        .map_err(|e| BuildError::Configure(io_err("read", &host)(e)))?;
                    EntryKind::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    }
                } else if ft.is_file() {
                    EntryKind::File {
                        content: Content::Host(host.clone()),
                        size: meta.len(),
                    }
                } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                    continue; // devices come from the runtime
                } else {
                    continue; // sockets
                };
                let mut xattrs = BTreeMap::new();
                if let Ok(Some(cap)) = xattr::get(&host, "security.capability") {
                    xattrs.insert("security.capability".to_owned(), cap);
                }
                out.push(Entry {
                    path: image_path(rel)?,
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: inside_id(&ids.uids, meta.uid()),
                    gid: inside_id(&ids.gids, meta.gid()),
                    mtime: meta.mtime(),
                    xattrs,
                });
            }
            Change::Delete(rel) => {
                if is_noise(&rel.to_string_lossy()) {
                    continue;
                }
                let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(name) = name else { continue };
                let wh = rel.with_file_name(format!(".wh.{name}"));
                out.push(Entry::inline_file(image_path(&wh)?, 0o644, Vec::new()));
            }
            Change::Opaque(rel) => {
                out.push(Entry::inline_file(
                    image_path(&rel.join(".wh..wh..opq"))?,
                    0o644,
                    Vec::new(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripts see `ischroot` succeed (a chroot), whatever the sandbox's PID 1 is.
    #[test]
    fn scripts_are_told_they_run_in_a_chroot() {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "{IN_CHROOT}command -v ischroot; ischroot; echo rc=$?; rm -r /tmp/.strata-bin"
            ))
            .output()
            .expect("run sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/tmp/.strata-bin/ischroot\nrc=0\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn noise_is_left_out() {
        for p in [
            "var/log/dpkg.log",
            "var/log/apt/history.log",
            "var/cache/debconf/config.dat-old",
            "var/lib/dpkg/status-old",
            "etc/machine-id",
            "usr/sbin/policy-rc.d",
            "var/cache/ldconfig/aux-cache",
        ] {
            assert!(is_noise(p), "{p}");
        }
        for p in [
            "var/log",
            "var/lib/dpkg/status",
            "etc/alternatives/awk",
            "etc/ld.so.cache",
            "var/cache/debconf/config.dat",
        ] {
            assert!(!is_noise(p), "{p}");
        }
    }

    #[test]
    fn whiteouts_and_opaque_directories_become_oci_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = dir.path();
        fs::create_dir_all(up.join("etc/alternatives")).expect("mkdir");
        fs::write(up.join("etc/alternatives/awk"), "x").expect("write");
        fs::write(up.join("etc/.wh.gone"), "").expect("write");
        fs::create_dir_all(up.join("var/log")).expect("mkdir");
        fs::write(up.join("var/log/dpkg.log"), "noise").expect("write");
        let changes = scan_upper(up).expect("scan");
        let ids = IdMapping::plan(0, 0, None, None, None);
        let entries = layer_entries(up, &changes, &ids).expect("entries");
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"etc/alternatives/awk"), "{paths:?}");
        assert!(paths.contains(&"etc/.wh.gone"), "{paths:?}");
        assert!(!paths.contains(&"var/log/dpkg.log"), "{paths:?}");
        assert!(paths.contains(&"var/log"), "{paths:?}");
    }

    #[test]
    fn ids_map_back_into_the_image() {
        let ranges = [
            strata_sandbox::IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            },
            strata_sandbox::IdRange {
                inside: 1,
                outside: 100_000,
                count: 65_536,
            },
        ];
        assert_eq!(inside_id(&ranges, 1000), 0);
        assert_eq!(inside_id(&ranges, 100_000 + 41), 42);
    }
}
