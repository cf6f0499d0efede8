//! The Python source: a half's `python` requirements as distributions in a virtual
//! environment of the image's own Python.
//!
//! The target is detected from the image: the Python version from the Debian `python3` package
//! and the `manylinux` glibc level from `libc6`, both read from the spec's Debian lock, and the
//! architecture from `[image]`. The real `uv` resolves the requirements for that target
//! (`uv pip compile --python-version … --python-platform … --only-binary :all: --format
//! pylock.toml`), so only wheels are used: a requirement available only as an sdist is an error
//! naming it. Every wheel is a download verified by its SHA-256 and cached by hash (the download
//! source's [`strata_fetch::Cache`]), installed (unzipped, `.data` directories placed, console
//! scripts written, nothing byte-compiled) into the virtual environment, `/opt/venv` by default.
//!
//! The lock file holds `[python.base]` / `[python.user]`: the request and every distribution's
//! URL, hash and size. [`PythonSource`] implements [`strata_source::Source`]: one store object
//! per distribution (`py:NAME==VERSION`) referencing the environment's own object (`py-venv:`,
//! `pyvenv.cfg` and the `python` links to `/usr/bin/python3`).

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

pub mod wheel;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use strata_fetch::{Cache, Http, redact};
use strata_fstree::{Entry, ImagePath, Tree, WalkOptions, walk};
use strata_source::{Resolution, Source, SourceContext, SourceError, StoreObject, hash_parts};
use strata_spec::{Part, Spec};

/// The index used when `python.index_url` is absent.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// Environment variable naming the `uv` binary (default: `uv` on `PATH`).
pub const UV_ENV: &str = "STRATA_UV";

/// A failure of the Python source.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    /// The image has no Python to install into.
    #[error("{0}")]
    NoPython(String),
    /// `uv` is not installed.
    #[error("cannot run `{uv}`: install uv (`pip install uv`) or set {UV_ENV}")]
    UvMissing {
        /// The command tried.
        uv: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `uv` could not resolve the requirements (unknown package, conflict, no wheel).
    #[error("cannot resolve {context}:\n{message}")]
    Resolve {
        /// The spec section.
        context: String,
        /// uv's explanation (the chain of requirements).
        message: String,
    },
    /// A distribution has no wheel for the image (only an sdist).
    #[error(
        "{context}: `{name}` {version} has no wheel for Python {python} on {platform}; \
         strata installs wheels only (building sdists is not supported)"
    )]
    NoWheel {
        /// The spec section.
        context: String,
        /// The distribution.
        name: String,
        /// Its version.
        version: String,
        /// The image's Python version.
        python: String,
        /// The platform.
        platform: String,
    },
    /// `--locked` or `--offline` and the lock does not match the spec.
    #[error("{flag}: {why}; run `strata lock` first")]
    Unlocked {
        /// `--locked` or `--offline`.
        flag: &'static str,
        /// What is missing or different.
        why: String,
    },
    /// A wheel could not be installed.
    #[error("wheel {wheel}: {message}")]
    Wheel {
        /// The wheel.
        wheel: String,
        /// What is wrong.
        message: String,
    },
    /// Downloading or verifying a wheel failed.
    #[error(transparent)]
    Fetch(#[from] strata_fetch::FetchError),
    /// A local file could not be read or written.
    #[error("cannot read or write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The lock file cannot be read or parsed.
    #[error("lock file {}: {message}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The image's Python, as the resolver targets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `3.11`.
    pub python: String,
    /// uv's platform name, e.g. `x86_64-manylinux_2_36`.
    pub platform: String,
}

/// Everything the resolution depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Requirements, in spec order.
    pub packages: Vec<String>,
    /// The target interpreter and platform.
    pub target: Target,
    /// The index URL (without credentials).
    pub index: String,
    /// `NAME==VERSION` of the distributions the base half installs into the same virtual
    /// environment (user half only): the user half is resolved with them as constraints and
    /// does not install them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed: Vec<String>,
}

/// One locked distribution: the wheel chosen for the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedDist {
    /// Normalised name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The wheel's URL.
    pub url: String,
    /// SHA-256 of the wheel.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The lock of one half's `python` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfLock {
    /// The request resolved.
    pub request: Request,
    /// The distributions, sorted by name.
    pub dists: Vec<LockedDist>,
}

/// The `[python]` table of a lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonLock {
    /// `[python.base]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<HalfLock>,
    /// `[python.user]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<HalfLock>,
}

#[derive(Deserialize)]
struct LockFileIn {
    #[serde(default)]
    python: Option<PythonLock>,
}

#[derive(Serialize)]
struct LockFileOut<'a> {
    python: &'a PythonLock,
}

impl PythonLock {
    /// The lock of one half.
    pub fn half(&self, part: Part) -> Option<&HalfLock> {
        match part {
            Part::Base => self.base.as_ref(),
            Part::User => self.user.as_ref(),
        }
    }

    /// The `[python.*]` tables as TOML text.
    pub fn to_toml(&self) -> Result<String, PythonError> {
        toml::to_string(&LockFileOut { python: self }).map_err(|e| PythonError::LockFile {
            path: "(lock)".into(),
            message: e.to_string(),
        })
    }

    /// Reads the `[python]` table of the lock file at `path` (none when absent).
    pub fn read(path: &Path) -> Result<Self, PythonError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(PythonError::LockFile {
                    path: path.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        let file: LockFileIn = toml::from_str(&text).map_err(|e| PythonError::LockFile {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(file.python.unwrap_or_default())
    }
}

/// `3.11` from a Debian `python3` version such as `3.11.2-1+b1`.
fn python_minor(debian_version: &str) -> Option<String> {
    let upstream = debian_version
        .split_once(':')
        .map_or(debian_version, |(_, v)| v);
    let mut parts = upstream.split(['.', '-', '+', '~']);
    let (major, minor) = (parts.next()?, parts.next()?);
    (major.chars().all(|c| c.is_ascii_digit()) && minor.chars().all(|c| c.is_ascii_digit()))
        .then(|| format!("{major}.{minor}"))
}

/// The target of the image: Python and glibc from the Debian lock's `python3` and `libc6`.
pub fn detect_target(
    debian: Option<&strata_debian::source::SpecLock>,
    architecture: &str,
    context: &str,
) -> Result<Target, PythonError> {
    let packages: Vec<&strata_debian::LockedPackage> = debian
        .into_iter()
        .flat_map(|l| [&l.base, &l.user])
        .flatten()
        .flat_map(|h| h.lock.packages.iter())
        .collect();
    let find = |name: &str| packages.iter().find(|p| p.name == name).map(|p| &p.version);
    let python = find("python3")
        .and_then(|v| python_minor(v))
        .ok_or_else(|| {
            PythonError::NoPython(format!(
                "{context}: the image has no Python: add \"python3\" to a half's debian packages \
             and run `strata lock` (the Python version is read from the Debian lock)"
            ))
        })?;
    let glibc = find("libc6")
        .and_then(|v| python_minor(v))
        .map(|g| g.replace('.', "_"))
        .unwrap_or_else(|| "2_17".to_owned());
    let arch = match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => other,
    };
    Ok(Target {
        python,
        platform: format!("{arch}-manylinux_{glibc}"),
    })
}

#[derive(Deserialize)]
struct Pylock {
    #[serde(default)]
    packages: Vec<PylockPackage>,
}

#[derive(Deserialize)]
struct PylockPackage {
    name: String,
    version: Option<String>,
    #[serde(default)]
    wheels: Vec<PylockWheel>,
}

#[derive(Deserialize)]
struct PylockWheel {
    url: String,
    size: Option<u64>,
    hashes: BTreeMap<String, String>,
}

/// Resolves `request` with the real `uv` into locked distributions (one wheel each).
pub fn resolve(
    request: &Request,
    index_with_credentials: &str,
    cache_dir: &Path,
    context: &str,
) -> Result<Vec<LockedDist>, PythonError> {
    let uv = std::env::var(UV_ENV).unwrap_or_else(|_| "uv".to_owned());
    let reqs = request.packages.join("\n") + "\n";
    let mut cmd = Command::new(&uv);
    let constraints = cache_dir.join("tmp").join(format!(
        "constraints.{}.{}.txt",
        std::process::id(),
        request.installed.len()
    ));
    if !request.installed.is_empty() {
        let io = |source| PythonError::Io {
            path: constraints.clone(),
            source,
        };
        std::fs::create_dir_all(cache_dir.join("tmp")).map_err(io)?;
        std::fs::write(&constraints, request.installed.join("\n") + "\n").map_err(io)?;
    }
    cmd.args([
        "pip",
        "compile",
        "-",
        "--format",
        "pylock.toml",
        "--no-header",
    ])
    .args(["--only-binary", ":all:", "--quiet", "--color", "never"])
    .args(["--python-version", &request.target.python])
    .args(["--python-platform", &request.target.platform])
    .arg("--index-url")
    .arg(index_with_credentials)
    .arg("--cache-dir")
    .arg(cache_dir.join("uv"))
    .env("UV_NO_CONFIG", "1")
    .env_remove("UV_INDEX_URL")
    .env_remove("UV_EXTRA_INDEX_URL")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| PythonError::UvMissing {
        uv: uv.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(reqs.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| PythonError::UvMissing { uv, source });
    let _ = std::fs::remove_file(&constraints);
    let out = out?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr)
            .replace(index_with_credentials, &redact(index_with_credentials))
            .trim()
            .to_owned();
        let message = if message.contains("no usable wheels") {
            format!(
                "{message}\nstrata installs wheels only: a requirement published only as a source \
                 distribution (sdist) cannot be installed"
            )
        } else {
            message
        };
        return Err(PythonError::Resolve {
            context: context.to_owned(),
            message,
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lock: Pylock = toml::from_str(&text).map_err(|e| PythonError::Resolve {
        context: context.to_owned(),
        message: format!("uv printed a lock strata cannot read: {e}"),
    })?;
    let mut dists = Vec::new();
    for p in lock.packages {
        let version = p.version.unwrap_or_default();
        if request
            .installed
            .contains(&format!("{}=={version}", p.name))
        {
            continue;
        }
        let best = p
            .wheels
            .iter()
            .filter_map(|w| {
                let file = w.url.rsplit('/').next().unwrap_or(&w.url);
                let file = file.split(['#', '?']).next().unwrap_or(file);
                wheel::score(file, &request.target.python).map(|s| (s, w))
            })
            .max_by_key(|(s, _)| *s)
            .map(|(_, w)| w);
        let Some(w) = best else {
            return Err(PythonError::NoWheel {
                context: context.to_owned(),
                name: p.name,
                version,
                python: request.target.python.clone(),
                platform: request.target.platform.clone(),
            });
        };
        let sha256 = w.hashes.get("sha256").cloned().unwrap_or_default();
        dists.push(LockedDist {
            name: p.name,
            version,
            url: w.url.clone(),
            sha256,
            size: w.size.unwrap_or(0),
        });
    }
    dists.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(dists)
}

/// How the Python source treats the lock file and the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PythonOptions {
    /// The lock must match the spec (never resolve).
    pub locked: bool,
    /// Use no network: the lock must match and every wheel must be in the cache.
    pub offline: bool,
}

/// The Python source of one spec half.
#[derive(Debug, Clone)]
pub struct PythonSource {
    part: Part,
    packages: Vec<String>,
    venv: ImagePath,
    index: String,
    lock_file: PathBuf,
    options: PythonOptions,
    context: String,
    /// The base half's source when this is the user half and both use the same venv.
    base: Option<Box<PythonSource>>,
}

impl PythonSource {
    /// The source of one half of `spec`, or `None` when it has no `python` key.
    pub fn from_spec(spec: &Spec, part: Part, options: PythonOptions) -> Option<Self> {
        let p = spec.half(part).python.as_ref()?;
        let base = match part {
            Part::User => Self::from_spec(spec, Part::Base, options)
                .filter(|b| b.venv == p.effective_venv())
                .map(Box::new),
            Part::Base => None,
        };
        Some(Self {
            base,
            part,
            packages: p.packages.clone(),
            venv: p.effective_venv(),
            index: p
                .index_url
                .clone()
                .unwrap_or_else(|| DEFAULT_INDEX.to_owned()),
            lock_file: strata_fetch::lock_path(&spec.path),
            options,
            context: format!("{}: {}", p.location, p.key),
        })
    }

    /// The request for a target, given the base half's distributions (see
    /// [`Request::installed`]).
    pub fn request(&self, target: Target, base: &[LockedDist]) -> Request {
        let mut installed: Vec<String> = base
            .iter()
            .map(|d| format!("{}=={}", d.name, d.version))
            .collect();
        installed.sort();
        Request {
            packages: self.packages.clone(),
            target,
            index: strata_fetch::http::strip_credentials(&self.index).0,
            installed,
        }
    }

    /// Resolves this half for `target` on top of the base half's distributions `base`.
    pub fn lock(
        &self,
        target: Target,
        base: &[LockedDist],
        cache_dir: &Path,
    ) -> Result<HalfLock, PythonError> {
        let request = self.request(target, base);
        let dists = resolve(&request, &self.index, cache_dir, &self.context)?;
        Ok(HalfLock { request, dists })
    }

    fn dists(
        &self,
        cache_dir: &Path,
        arch: &str,
    ) -> Result<(Target, Vec<LockedDist>), PythonError> {
        let debian = strata_debian::source::SpecLock::read(&self.lock_file).map_err(|e| {
            PythonError::LockFile {
                path: self.lock_file.clone(),
                message: e.to_string(),
            }
        })?;
        let target = detect_target(debian.as_ref(), arch, &self.context)?;
        let base = match &self.base {
            Some(b) => b.dists(cache_dir, arch)?.1,
            None => Vec::new(),
        };
        let request = self.request(target.clone(), &base);
        let lock = PythonLock::read(&self.lock_file)?;
        match lock.half(self.part) {
            Some(h) if h.request == request => return Ok((target, h.dists.clone())),
            held => {
                let why = match held {
                    Some(_) => format!(
                        "{} does not match {}",
                        self.lock_file.display(),
                        self.context
                    ),
                    None => format!(
                        "{} has no lock for {}",
                        self.lock_file.display(),
                        self.context
                    ),
                };
                if self.options.offline {
                    return Err(PythonError::Unlocked {
                        flag: "--offline",
                        why,
                    });
                }
                if self.options.locked {
                    return Err(PythonError::Unlocked {
                        flag: "--locked",
                        why,
                    });
                }
            }
        }
        Ok((target, self.lock(request.target, &base, cache_dir)?.dists))
    }

    fn resolve_objects(&self, ctx: &SourceContext<'_>) -> Result<Resolution, PythonError> {
        let (target, dists) = self.dists(ctx.cache_dir, ctx.architecture)?;
        let cache = Cache::open(ctx.cache_dir)?;
        let http = Http::new();
        let venv = self.venv.absolute();
        let venv_id = format!("py-venv:{venv}");
        let mut out = Resolution::default();
        ctx.reporter
            .items_started("Python wheels fetched", dists.len() as u64);
        for d in &dists {
            let blob = match cache.verified(&d.sha256)? {
                Some(p) => p,
                None if self.options.offline => {
                    return Err(strata_fetch::FetchError::NotCached {
                        url: redact(&d.url),
                        sha256: d.sha256.clone(),
                    }
                    .into());
                }
                None => {
                    http.download(&d.url, Some(&d.sha256), &cache, &strata_fetch::NoReporter)?
                        .path
                }
            };
            let filename = d.url.rsplit('/').next().unwrap_or(&d.url).to_owned();
            ctx.reporter.item_done(&filename);
            let key = hash_parts([
                b"python-install-v1".as_slice(),
                d.sha256.as_bytes(),
                venv.as_bytes(),
                target.python.as_bytes(),
            ]);
            let root = installed(ctx.cache_dir, &key, |dir| {
                wheel::install(&blob, &filename, dir, &venv, &target.python)
            })?;
            let (tree, _) = walk(
                &root,
                &strata_fstree::Dest::Path(self.venv.clone()),
                &WalkOptions::default(),
            )
            .map_err(|e| PythonError::Wheel {
                wheel: filename.clone(),
                message: e.to_string(),
            })?;
            let tree = Tree::from_entries(tree.entries().iter().cloned().map(|mut e| {
                e.mtime = i64::MAX;
                e
            }));
            let id = format!("py:{}=={}", d.name, d.version);
            out.roots.push(id.clone());
            out.objects.push(StoreObject {
                id,
                tree,
                references: vec![venv_id.clone()],
                cache_key: key,
            });
        }
        out.objects
            .push(venv_object(&self.venv, &target.python, &venv_id));
        // The venv's `python3` must win over the system's, as after `source bin/activate`.
        out.env.push((
            strata_source::PATH_BEFORE_SYSTEM.to_owned(),
            format!("{venv}/bin"),
        ));
        out.env.push(("VIRTUAL_ENV".to_owned(), venv));
        Ok(out)
    }
}

/// The directory of an installed wheel in the cache, installing it first with `install` (into
/// a temporary directory moved into place when complete).
fn installed(
    cache_dir: &Path,
    key: &str,
    install: impl FnOnce(&Path) -> Result<(), PythonError>,
) -> Result<PathBuf, PythonError> {
    let dir = cache_dir.join("installed-v1").join(key);
    let root = dir.join("root");
    if root.is_dir() {
        return Ok(root);
    }
    let tmp = cache_dir
        .join("tmp")
        .join(format!("install.{}.{key}", std::process::id()));
    let tmp_root = tmp.join("root");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PythonError::Io { path, source }
    };
    std::fs::create_dir_all(&tmp_root).map_err(io(&tmp_root))?;
    if let Err(e) = install(&tmp_root) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let installed_dir = cache_dir.join("installed-v1");
    std::fs::create_dir_all(&installed_dir).map_err(io(&installed_dir))?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(root),
        Err(_) if root.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(root)
        }
        Err(e) => Err(io(&dir)(e)),
    }
}

/// The environment itself: `pyvenv.cfg` and the interpreter links.
fn venv_object(venv: &ImagePath, python: &str, id: &str) -> StoreObject {
    let at = |rel: &str| ImagePath::new(&format!("{}/{rel}", venv.absolute())).expect("venv path");
    let cfg = format!(
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = {python}\nexecutable = /usr/bin/python{python}\n"
    );
    let tree = Tree::from_entries([
        Entry::directory(venv.clone(), 0o755),
        Entry::directory(at("bin"), 0o755),
        Entry::inline_file(at("pyvenv.cfg"), 0o644, cfg.into_bytes()),
        Entry::symlink(at("bin/python3"), format!("/usr/bin/python{python}")),
        Entry::symlink(at("bin/python"), "python3"),
        Entry::symlink(at(&format!("bin/python{python}")), "python3"),
        Entry::directory(at("lib"), 0o755),
        Entry::directory(at(&format!("lib/python{python}")), 0o755),
        Entry::directory(at(&format!("lib/python{python}/site-packages")), 0o755),
        Entry::symlink(at("lib64"), "lib"),
    ]);
    let tree = Tree::from_entries(tree.entries().iter().cloned().map(|mut e| {
        e.mtime = i64::MAX;
        e
    }));
    StoreObject {
        id: id.to_owned(),
        cache_key: hash_parts([
            b"python-venv-v1".as_slice(),
            venv.as_str().as_bytes(),
            python.as_bytes(),
        ]),
        tree,
        references: Vec::new(),
    }
}

impl Source for PythonSource {
    fn kind(&self) -> &'static str {
        "python"
    }

    fn resolve(&self, ctx: &SourceContext<'_>) -> Result<Resolution, SourceError> {
        self.resolve_objects(ctx).map_err(|e| SourceError::Entry {
            context: self.context.clone(),
            message: "cannot install the Python packages".to_owned(),
            source: Some(Box::new(e)),
        })
    }
}

/// Locks the `python` sections of both halves for the image described by `debian` (the
/// Debian lock just written). `None` when neither half has one.
pub fn lock_spec(
    spec: &Spec,
    debian: Option<&strata_debian::source::SpecLock>,
    cache_dir: &Path,
) -> Result<Option<PythonLock>, PythonError> {
    let mut lock = PythonLock::default();
    let mut any = false;
    for part in [Part::Base, Part::User] {
        let Some(src) = PythonSource::from_spec(spec, part, PythonOptions::default()) else {
            continue;
        };
        any = true;
        let target = detect_target(debian, &spec.image.architecture, &src.context)?;
        let base: Vec<LockedDist> = match (&src.base, &lock.base) {
            (Some(_), Some(b)) => b.dists.clone(),
            _ => Vec::new(),
        };
        let half = src.lock(target, &base, cache_dir)?;
        match part {
            Part::Base => lock.base = Some(half),
            Part::User => lock.user = Some(half),
        }
    }
    Ok(any.then_some(lock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_give_python_and_glibc() {
        assert_eq!(python_minor("3.11.2-1+b1").as_deref(), Some("3.11"));
        assert_eq!(python_minor("2.36-9+deb12u9").as_deref(), Some("2.36"));
        assert_eq!(python_minor("1:3.12.1-1").as_deref(), Some("3.12"));
        assert_eq!(python_minor("garbage"), None);
    }
}
