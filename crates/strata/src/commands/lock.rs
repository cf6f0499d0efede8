//! `strata lock SPEC`.
//!
//! The lock file of `DIR/NAME.toml` is `DIR/NAME.lock` ([`strata_debian::source::lock_path`]):
//! the exact Debian packages of both halves and the hashes of their downloads, the downloads,
//! the Python distributions and the Nix outputs. `strata lock` (re)writes it; `strata build` uses
//! it when it matches the spec and never writes it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use strata_debian::source;
use strata_spec::{Part, Spec};
use strata_store::Store;

use crate::args::LockArgs;

/// Progress messages of the resolver on stderr.
struct StderrReporter;

impl strata_debian::Reporter for StderrReporter {
    fn message(&self, msg: &str) {
        if msg.starts_with("resolving") {
            eprintln!("{msg}");
        }
    }
}

/// The directory the Debian source keeps downloads in for this store.
pub fn debian_cache(store: &Store) -> Result<PathBuf> {
    match std::env::var_os(source::DEBIAN_CACHE_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(store.source_dir("debian")?),
    }
}

/// Download progress of `strata lock` on stderr.
struct FetchStderr;

impl strata_fetch::Reporter for FetchStderr {
    fn message(&self, msg: &str) {
        eprintln!("{msg}");
    }
}

/// `strata lock SPEC`: resolves both halves and writes the lock file: the Debian packages,
/// then the downloads (`[[fetch]]`: hash, size and final URL of every `fetch` URL).
pub fn run(store_root: &Path, args: LockArgs) -> Result<()> {
    let spec = Spec::load(&args.spec)?;
    let (base, user) = (
        source::request_for(&spec, Part::Base),
        source::request_for(&spec, Part::User),
    );
    let has_fetch = !spec.base.fetch.is_empty() || !spec.user.fetch.is_empty();
    let has_python = spec.base.python.is_some() || spec.user.python.is_some();
    let has_nix = spec.base.nix.is_some() || spec.user.nix.is_some();
    if base.is_none() && user.is_none() && !has_fetch && !has_python && !has_nix {
        bail!(
            "{}: neither [base] nor [user] has a `debian`, `fetch`, `python` or `nix` key: \
             there is nothing to lock",
            args.spec.display()
        );
    }
    let store = Store::open(store_root)?;
    let lock = if base.is_some() || user.is_some() {
        let cache = debian_cache(&store)?;
        source::resolve_spec(base.as_ref(), user.as_ref(), &cache, &StderrReporter)
            .with_context(|| format!("locking {}", args.spec.display()))?
    } else {
        source::SpecLock {
            version: source::SPEC_LOCK_VERSION,
            base: None,
            user: None,
        }
    };
    let fetch = strata_fetch::lock_spec(&spec, &store.source_dir("fetch")?, &FetchStderr)
        .with_context(|| format!("locking the downloads of {}", args.spec.display()))?;
    let python = strata_python::lock_spec(&spec, Some(&lock), &store.source_dir("python")?)
        .with_context(|| format!("locking the Python packages of {}", args.spec.display()))?;
    let nix = lock_nix(&spec)?;
    let path = source::lock_path(&spec.path);
    let mut text = lock.to_toml()?;
    if let Some(f) = &fetch {
        text.push('\n');
        text.push_str(&f.to_toml()?);
    }
    if let Some(p) = &python {
        text.push('\n');
        text.push_str(&p.to_toml()?);
    }
    if !nix.is_empty() {
        text.push('\n');
        text.push_str(&nix.to_toml()?);
    }
    let tmp = path.with_extension("lock.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    let count = |h: &Option<source::HalfLock>| h.as_ref().map_or(0, |h| h.lock.packages.len());
    println!(
        "wrote {}: {} packages ({} base, {} user), {} downloads, {} Python distributions, \
         {} Nix outputs",
        path.display(),
        lock.package_count(),
        count(&lock.base),
        count(&lock.user),
        fetch.as_ref().map_or(0, |f| f.len()),
        python.as_ref().map_or(0, |p| {
            [&p.base, &p.user]
                .into_iter()
                .flatten()
                .map(|h| h.dists.len())
                .sum::<usize>()
        }),
        [&nix.base, &nix.user]
            .into_iter()
            .flatten()
            .map(|h| h.outputs.len())
            .sum::<usize>()
    );
    Ok(())
}

/// Builds each half's installables with the real nix and locks their outputs.
fn lock_nix(spec: &Spec) -> Result<strata_nix::NixLock> {
    let mut lock = strata_nix::NixLock::default();
    for part in [Part::Base, Part::User] {
        let Some(input) = strata_build::nix_input(spec, part) else {
            continue;
        };
        let context = input.context.clone();
        eprintln!("resolving {context}");
        let half = strata_nix::NixSource::new(input)
            .lock()
            .with_context(|| format!("locking {context}"))?;
        match part {
            Part::Base => lock.base = Some(half),
            Part::User => lock.user = Some(half),
        }
    }
    Ok(lock)
}
