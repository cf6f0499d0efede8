//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the crate's parsers of
//! untrusted bytes, reached without a network or a real repository. Each returns whether the
//! input was accepted; what matters to a fuzzer is that none of them panics or hangs.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::cache::Cache;

/// A fixed SHA256 for fuzzed `.deb`s: their kept `data.tar` overwrites one cache file instead
/// of filling the disk with one per input.
const FUZZ_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Parses `text` as a verified `Release` of suite `bookworm` fetched now.
pub fn release(text: &str) -> bool {
    let now = crate::release::now_secs();
    crate::release::parse_release(
        "Release",
        text,
        "http://deb.example/debian",
        "bookworm",
        FUZZ_SHA256.to_owned(),
        now,
    )
    .is_ok()
}

/// Parses `text` as a `Packages` index for `amd64` (and `all`).
pub fn packages(text: &str) -> bool {
    crate::resolve::parse_index("Packages", text, 0, "amd64").is_ok()
}

fn scratch() -> &'static Option<(tempfile::TempDir, Cache)> {
    static SCRATCH: OnceLock<Option<(tempfile::TempDir, Cache)>> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("strata-fuzz-deb-")
            .tempdir()
            .ok()?;
        let cache = Cache::new(dir.path()).ok()?;
        Some((dir, cache))
    })
}

/// Reads `bytes` as a `.deb` (ar archive, control and data tars) into a scratch cache.
pub fn deb(bytes: &[u8]) -> bool {
    let Some((dir, cache)) = scratch() else {
        return false;
    };
    let path: PathBuf = dir.path().join("input.deb");
    if std::fs::write(&path, bytes).is_err() {
        return false;
    }
    crate::deb::extract(cache, &path, FUZZ_SHA256, true, "input.deb", &mut |_| {}).is_ok()
}
