//! Turning a [`Target`] into a spec with its inputs resolved, and its cache key; then building
//! and pushing it. Both are blocking (they call the synchronous build pipeline); the server runs
//! them with `spawn_blocking`.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_debian::source::{self, SpecLock};
use strata_oci::Digest;
use strata_registry::{Client, Reference};
use strata_spec::{Part, Spec};
use strata_store::Store;
use strata_transport::Transport;

use crate::name::Target;

/// Version of the cache-key scheme; bump it when what a key covers changes.
const KEY_SCHEME: &str = "strata-serve-key-v1";

/// Annotation naming the cache key an image was built for.
pub const ANNOTATION_KEY: &str = "dev.strata.serve.key";
/// Annotation listing the Debian Releases the image was built from (`URI SUITE DATE SHA256`,
/// `; `-separated).
pub const ANNOTATION_RELEASES: &str = "dev.strata.serve.releases";
/// Annotation holding the canonical repository name the image was built for.
pub const ANNOTATION_NAME: &str = "dev.strata.serve.name";
/// Annotation listing the Nix outputs the image was built from (`INSTALLABLE PATH NARHASH`,
/// `; `-separated).
pub const ANNOTATION_NIX: &str = "dev.strata.serve.nix";
/// Annotation holding the SHA256 of the lock text the image was built from.
pub const ANNOTATION_LOCK: &str = "dev.strata.serve.lock";

/// Where preparing and building read and write.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `--specs DIR`.
    pub specs: Option<PathBuf>,
    /// Per-key work directories (the spec and lock a build reads).
    pub work: PathBuf,
    /// The Debian download cache.
    pub debian_cache: PathBuf,
    /// Whether builds here can run the packages' maintainer scripts (user namespaces work):
    /// an image built without them has other bytes, so it is part of the key.
    pub scripts: bool,
}

/// Whether this process can create user namespaces, so Debian's maintainer scripts run.
pub fn maintainer_scripts_run() -> bool {
    strata_sandbox::in_user_namespace(&strata_sandbox::IdMapping::detect(), || Ok(())).is_ok()
}

/// A target with its inputs resolved.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Canonical repository name.
    pub name: String,
    /// The cache key: `k-` and the SHA256 of everything the image is built from.
    pub key: String,
    /// The Releases the Debian packages were resolved against.
    pub releases: Vec<String>,
    /// The Nix outputs the installables built to (`INSTALLABLE PATH NARHASH`).
    pub nix_outputs: Vec<String>,
    /// SHA256 of the lock text.
    pub lock_sha256: String,
    /// The spec to build (its lock beside `spec.path`, in the key's work directory).
    pub spec_path: PathBuf,
    /// The directory relative paths of the spec resolve against.
    pub spec_dir: PathBuf,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `text` to `path` unless the file already holds it (temporary file, then rename).
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, text).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// An error and its causes on one line.
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let m = e.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = e.source();
    }
    s.replace('\n', " ")
}

/// Hashes every file under `dir` (paths, kinds, modes, contents, link targets), in name
/// order, skipping `strata.lock` (hashed separately as resolved) and `users/` (only the
/// selected user half, `users/USER.toml` and `users/USER/`, is hashed).
fn hash_tree(dir: &Path, h: &mut Sha256, rel: &str, depth: usize) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if depth > 64 {
        return Err(format!("{}: directories nested too deep", dir.display()));
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if depth == 0 && (name == "strata.lock" || name == "users") {
            continue;
        }
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|err| format!("reading {}: {err}", path.display()))?;
        let rel = format!("{rel}/{name}");
        h.update(rel.as_bytes());
        h.update(meta.permissions().mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&path)
                .map_err(|err| format!("reading {}: {err}", path.display()))?;
            h.update(b"l");
            h.update(t.to_string_lossy().as_bytes());
        } else if meta.is_dir() {
            h.update(b"d");
            hash_tree(&path, h, &rel, depth + 1)?;
        } else if meta.is_file() {
            let mut f = std::fs::File::open(&path)
                .map_err(|err| format!("reading {}: {err}", path.display()))?;
            h.update(b"f");
            h.update(meta.len().to_le_bytes());
            std::io::copy(&mut f, h).map_err(|err| format!("reading {}: {err}", path.display()))?;
        }
        h.update(b"\0");
    }
    Ok(())
}

struct Quiet;
impl strata_debian::Reporter for Quiet {}

/// Why a target could not be prepared.
#[derive(Debug, Clone)]
pub struct Failure {
    /// One line: unknown package, unresolvable dependency with its chain, unreadable spec.
    pub message: String,
    /// The archive could not be reached: a retry may succeed (not remembered).
    pub retryable: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            retryable: false,
        }
    }
}

/// Resolves a target: writes its spec, resolves its Debian halves against the archive as it
/// is now, and derives the cache key from the result. A failure is one line (unknown package,
/// unresolvable dependency with its chain, unreadable spec).
pub fn prepare(target: &Target, paths: &Paths) -> Result<Prepared, Failure> {
    let name = target.to_string();
    // The spec text and what else goes into the key before the lock.
    let (spec_text, spec_dir, inputs) = match target {
        Target::Debian(t) => {
            let text = t.spec_toml();
            (text.clone(), None, text)
        }
        Target::Nix(t) => {
            let text = t.spec_toml();
            (text.clone(), None, text)
        }
        Target::Spec(n) | Target::SpecUser(n, _) => {
            let specs = paths
                .specs
                .as_ref()
                .ok_or_else(|| format!("{name}: the server has no --specs directory"))?;
            let dir = specs.join(n);
            let file = dir.join("strata.toml");
            let mut text = std::fs::read_to_string(&file)
                .map_err(|e| format!("{name}: no spec {} ({e})", file.display()))?;
            let mut h = Sha256::new();
            hash_tree(&dir, &mut h, "", 0)?;
            if let Target::SpecUser(_, user) = target {
                let ufile = dir.join("users").join(format!("{user}.toml"));
                let utext = std::fs::read_to_string(&ufile)
                    .map_err(|e| format!("{name}: no user half {} ({e})", ufile.display()))?;
                h.update(b"user\0");
                h.update(utext.as_bytes());
                // The user's own files: DIR/NAME/users/USER/ (paths relative to DIR/NAME).
                let udir = dir.join("users").join(user);
                if udir.is_dir() {
                    hash_tree(&udir, &mut h, "users", 1)?;
                }
                let mut spec: toml::Table =
                    toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
                let half: toml::Table =
                    toml::from_str(&utext).map_err(|e| format!("{}: {e}", ufile.display()))?;
                spec.insert("user".into(), toml::Value::Table(half));
                text = toml::to_string(&spec).map_err(|e| format!("{}: {e}", ufile.display()))?;
            }
            (text, Some(dir), hex::encode(h.finalize()))
        }
    };
    // Parse where the spec really is (so errors name the file), then resolve.
    let origin = spec_dir
        .as_ref()
        .map(|d| d.join("strata.toml"))
        .unwrap_or_else(|| PathBuf::from(format!("{name}.toml")));
    let spec = Spec::parse(&spec_text, &origin).map_err(|e| one_line(&e))?;
    let (base, user) = (
        source::request_for(&spec, Part::Base),
        source::request_for(&spec, Part::User),
    );
    let (lock_text, releases) = if base.is_some() || user.is_some() {
        // A spec's own lock wins when it still matches (the team pinned it).
        let own = spec_dir
            .as_ref()
            .map(|d| SpecLock::read(&d.join("strata.lock")))
            .transpose()
            .map_err(|e| one_line(&e))?
            .flatten()
            .filter(|l| {
                source::check_lock(Some(l), base.as_ref(), user.as_ref())
                    .iter()
                    .all(|s| matches!(s, source::HalfState::Fresh | source::HalfState::Absent))
            });
        let lock = match own {
            Some(l) => l,
            None => source::resolve_spec(base.as_ref(), user.as_ref(), &paths.debian_cache, &Quiet)
                .map_err(|e| Failure {
                    retryable: matches!(e, strata_debian::DebianError::Http { .. }),
                    message: one_line(&e),
                })?,
        };
        let mut releases: Vec<String> = [&lock.base, &lock.user]
            .into_iter()
            .flatten()
            .flat_map(|h| h.lock.releases.iter())
            .map(|r| format!("{} {} {} {}", r.uri, r.suite, r.date, r.sha256))
            .collect();
        releases.sort();
        releases.dedup();
        (lock.to_toml().map_err(|e| one_line(&e))?, releases)
    } else {
        (String::new(), Vec::new())
    };
    // Nix halves: what their installables build to now (`nixpkgs` moving is another image).
    let mut nix_lock = strata_nix::NixLock::default();
    let mut nix_spec = spec.clone();
    if spec_dir.is_none() {
        std::fs::create_dir_all(&paths.work)
            .map_err(|e| format!("creating {}: {e}", paths.work.display()))?;
        nix_spec.dir = paths.work.clone();
    }
    for part in [Part::Base, Part::User] {
        let Some(input) = strata_build::nix_input(&nix_spec, part) else {
            continue;
        };
        let half = strata_nix::NixSource::new(input)
            .lock()
            .map_err(|e| format!("{name}: {}", one_line(&e)))?;
        match part {
            Part::Base => nix_lock.base = Some(half),
            Part::User => nix_lock.user = Some(half),
        }
    }
    let nix_outputs: Vec<String> = [&nix_lock.base, &nix_lock.user]
        .into_iter()
        .flatten()
        .flat_map(|h| h.outputs.iter())
        .map(|o| format!("{} {} {}", o.installable, o.path, o.nar_hash))
        .collect();
    let mut lock_text = lock_text;
    if !nix_lock.is_empty() {
        if lock_text.is_empty() {
            let empty = SpecLock {
                version: source::SPEC_LOCK_VERSION,
                base: None,
                user: None,
            };
            lock_text = empty.to_toml().map_err(|e| one_line(&e))?;
        }
        lock_text.push('\n');
        lock_text.push_str(&nix_lock.to_toml().map_err(|e| one_line(&e))?);
    }
    let key_hex = sha256_hex(
        format!(
            "{KEY_SCHEME}\nstrata {}\nmaintainer scripts {}\n{name}\n{}\n{inputs}\n{lock_text}",
            env!("CARGO_PKG_VERSION"),
            paths.scripts,
            spec_text.len()
        )
        .as_bytes(),
    );
    let key = format!("k-{key_hex}");
    let work = paths.work.join(&key);
    let spec_path = work.join("strata.toml");
    write_file(&spec_path, &spec_text)?;
    if !lock_text.is_empty() {
        write_file(&source::lock_path(&spec_path), &lock_text)?;
    }
    Ok(Prepared {
        name,
        key,
        releases,
        nix_outputs,
        lock_sha256: sha256_hex(lock_text.as_bytes()),
        spec_dir: spec_dir.unwrap_or(work),
        spec_path,
    })
}

/// A manifest as served: bytes, media type, digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The bytes.
    pub bytes: bytes::Bytes,
    /// Its media type.
    pub media_type: String,
    /// `sha256:...` of the bytes.
    pub digest: String,
}

/// How the server builds.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// The store builds use.
    pub store: PathBuf,
    /// Worker threads per build.
    pub threads: usize,
}

/// Builds a prepared target and pushes it to `backend` under its key; returns the manifest
/// pushed (the built manifest with the serve annotations added).
pub fn build_and_push(
    p: &Prepared,
    settings: &BuildSettings,
    client: &Client,
    backend: &Reference,
) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(&p.spec_path)
        .map_err(|e| format!("reading {}: {e}", p.spec_path.display()))?;
    let mut spec = Spec::parse(&text, &p.spec_path).map_err(|e| one_line(&e))?;
    spec.dir = p.spec_dir.clone();
    let store = Store::open(&settings.store).map_err(|e| one_line(&e))?;
    let opts = strata_build::BuildOptions {
        threads: settings.threads,
        ..strata_build::BuildOptions::default()
    };
    let outcome = strata_build::build(&spec, &store, &opts, &strata_build::NoReporter)
        .map_err(|e| one_line(&e))?;
    let mut image = outcome.image;
    let mut doc: serde_json::Value = serde_json::from_slice(&image.manifest)
        .map_err(|e| format!("reading the built manifest: {e}"))?;
    let annotations = doc
        .as_object_mut()
        .ok_or("the built manifest is not a JSON object")?
        .entry("annotations")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(a) = annotations.as_object_mut() {
        a.insert(ANNOTATION_NAME.into(), p.name.clone().into());
        a.insert(ANNOTATION_KEY.into(), p.key.clone().into());
        a.insert(ANNOTATION_RELEASES.into(), p.releases.join("; ").into());
        if !p.nix_outputs.is_empty() {
            a.insert(ANNOTATION_NIX.into(), p.nix_outputs.join("; ").into());
        }
        a.insert(
            ANNOTATION_LOCK.into(),
            format!("sha256:{}", p.lock_sha256).into(),
        );
    }
    image.manifest = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
    image.manifest_digest = Digest::sha256(&image.manifest);
    let dest = Transport::Registry(backend.with_tag(&p.key));
    strata_transport::write(
        &image,
        &dest,
        Some(client),
        &strata_registry::NoProgress,
        &store.scratch_dir(),
    )
    .map_err(|e| format!("pushing to the backend {dest}: {}", one_line(&e)))?;
    Ok(Manifest {
        bytes: image.manifest.into(),
        media_type: image.manifest_media_type,
        digest: image.manifest_digest.to_string(),
    })
}
