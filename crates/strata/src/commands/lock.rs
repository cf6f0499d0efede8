//! `strata lock SPEC`.
//!
//! The lock file of `DIR/NAME.toml` is `DIR/NAME.lock` ([`strata_debian::source::lock_path`]):
//! the exact Debian packages of both halves. `strata lock` (re)writes it; `strata build` uses
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

/// `strata lock SPEC`: resolves both halves and writes the lock file.
pub fn run(store_root: &Path, args: LockArgs) -> Result<()> {
    let spec = Spec::load(&args.spec)?;
    let (base, user) = (
        source::request_for(&spec, Part::Base),
        source::request_for(&spec, Part::User),
    );
    if base.is_none() && user.is_none() {
        bail!(
            "{}: neither [base] nor [user] has a `debian` key: there is nothing to lock",
            args.spec.display()
        );
    }
    let store = Store::open(store_root)?;
    let cache = debian_cache(&store)?;
    let lock = source::resolve_spec(base.as_ref(), user.as_ref(), &cache, &StderrReporter)
        .with_context(|| format!("locking {}", args.spec.display()))?;
    let path = source::lock_path(&spec.path);
    let text = lock.to_toml()?;
    let tmp = path.with_extension("lock.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    let count = |h: &Option<source::HalfLock>| h.as_ref().map_or(0, |h| h.lock.packages.len());
    println!(
        "wrote {}: {} packages ({} base, {} user)",
        path.display(),
        lock.package_count(),
        count(&lock.base),
        count(&lock.user)
    );
    Ok(())
}
