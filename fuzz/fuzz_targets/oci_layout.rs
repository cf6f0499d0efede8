//! An OCI image layout read back (strata-oci's reader for `inspect`, and strata-coder's, which
//! also applies the layers). The input is `index.json`, the manifest, the configuration and one
//! layer, separated by `\n--\n`; they are stored as the blobs `M`, `C` and `L`, so documents
//! name them `sha256:M`, `sha256:C`, `sha256:L`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{fix_tar_checksums, parts, write};

fuzz_target!(|data: &[u8]| {
    let parts = parts(data, 4);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let root = dir.path();
    let blobs = root.join("blobs/sha256");
    let mut layer = parts.get(3).copied().unwrap_or_default().to_vec();
    fix_tar_checksums(&mut layer);
    let ok = write(&root.join("index.json"), parts[0])
        && write(&blobs.join("M"), parts.get(1).copied().unwrap_or_default())
        && write(&blobs.join("C"), parts.get(2).copied().unwrap_or_default())
        && write(&blobs.join("L"), &layer);
    if !ok {
        return;
    }
    let _ = strata_oci::read::read_oci_layout(root, None);
    let _ = strata_oci::read::read_oci_layout(root, Some("latest"));
    let _ = strata_coder::open_oci_layout(root, None);
});
