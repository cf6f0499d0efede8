//! The state one build shares between its resolutions and fetches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Lock, Package, release, resolve};

/// A parsed `Packages` index and its text.
pub(crate) type ParsedIndex = Arc<(Vec<resolve::PkgVer>, String)>;

/// Memo tables of one build (or one `strata lock`): the Releases verified, the indices
/// parsed, the halves resolved and the packages fetched, and the DNS answers of the mirrors.
/// Resolving both halves of a spec in one session fetches, verifies and parses each
/// `InRelease` and index once. Nothing outlives the session: a new one starts empty, so two
/// builds (or two tests) in one process never share state, and a long-running process does
/// not accumulate it. The build pipeline keeps one in its [`strata_source::Session`].
#[derive(Debug, Default)]
pub struct Session {
    pub(crate) releases: Mutex<HashMap<String, release::Release>>,
    pub(crate) indices: Mutex<HashMap<String, ParsedIndex>>,
    pub(crate) resolved: Mutex<HashMap<String, Lock>>,
    pub(crate) fetched: Mutex<HashMap<String, Arc<Package>>>,
    pub(crate) dns: Arc<crate::dns::DnsCache>,
}

impl Session {
    /// An empty session.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Reads a memo table even after a panic of another thread (its entries are complete values).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
