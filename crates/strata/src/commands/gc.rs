//! `strata gc`.

use std::path::Path;

use anyhow::Result;
use strata_store::Store;

use crate::args::GcArgs;

/// Removes what no recorded image uses: blobs, layer records, and the root file systems
/// `strata run` unpacked for other images.
pub fn run(store_root: &Path, args: GcArgs) -> Result<()> {
    let store = Store::open(store_root)?;
    let ids = strata_sandbox::IdMapping::detect();
    let report = store.gc_with::<strata_build::LayerRecord, _>(
        "removing unpacked root file systems",
        |store, used| strata_sandbox::remove_unused_rootfs(store, used, &ids),
    )?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!(
            "removed {} blobs ({} bytes), {} stale layer records and {} unpacked root file systems",
            report.blobs_removed,
            report.bytes_freed,
            report.records_removed,
            report.rootfs_removed
        );
    }
    Ok(())
}
