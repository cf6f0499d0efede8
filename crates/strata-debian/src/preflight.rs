//! The lock-file check `strata build` makes before building a spec with `debian` keys.

use strata_spec::{Part, Spec};

use crate::source::{self, HalfState, SourceFailure, SpecLock};

/// With `locked` (or `offline`), fails unless the lock file matches the spec, naming the half
/// and what differs. Otherwise returns one note per half that will be resolved in memory
/// because the lock is missing or out of date (the caller shows them).
pub fn preflight(spec: &Spec, locked: bool, offline: bool) -> Result<Vec<String>, SourceFailure> {
    let (base, user) = (
        source::request_for(spec, Part::Base),
        source::request_for(spec, Part::User),
    );
    if base.is_none() && user.is_none() {
        return Ok(Vec::new());
    }
    let path = source::lock_path(&spec.path);
    let file = SpecLock::read(&path)?;
    let states = source::check_lock(file.as_ref(), base.as_ref(), user.as_ref());
    let mut notes = Vec::new();
    for (half, state) in ["base", "user"].into_iter().zip(states) {
        let why = match state {
            HalfState::Fresh | HalfState::Absent => continue,
            HalfState::Missing if file.is_none() => format!("no lock file {}", path.display()),
            HalfState::Missing => format!("{} has no lock for [{half}].debian", path.display()),
            HalfState::Stale(d) => {
                format!("{} does not match [{half}].debian: {d}", path.display())
            }
        };
        if locked {
            return Err(SourceFailure::Locked(format!(
                "{why}; run `strata lock {}` to update it",
                spec.path.display()
            )));
        }
        if offline {
            return Err(SourceFailure::OfflineUnlocked(format!(
                "{why} (resolving needs the network)"
            )));
        }
        notes.push(format!(
            "{why}; resolving [{half}].debian in memory (`strata lock {}` writes the lock)",
            spec.path.display()
        ));
    }
    Ok(notes)
}
