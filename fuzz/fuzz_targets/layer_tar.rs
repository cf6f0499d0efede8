//! A layer tar as the Coder check reads it (strata-coder's file index): gzip/zstd sniffing,
//! whiteouts, links, then path resolution in the result. Header checksums are fixed up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_coder::FileIndex;

fuzz_target!(|data: &[u8]| {
    let mut tar = data.to_vec();
    strata_fuzz::fix_tar_checksums(&mut tar);
    let mut index = FileIndex::new();
    // Two layers: the input on top of itself exercises whiteouts against real lower content.
    if index.apply_layer_stream(&tar[..]).is_err() {
        return;
    }
    let _ = index.apply_layer_stream(&tar[..]);
    let paths: Vec<String> = index.iter().map(|(p, _)| p.to_owned()).take(64).collect();
    for p in &paths {
        let _ = index.resolve(p);
        let _ = index.read(p);
    }
    let _ = index.which("sh", "/usr/bin:/bin");
    let _ = index.descendants("/");
});
