//! A `.deb` (strata-debian): the ar container, the control and data tars (checksums of
//! uncompressed tar members are fixed up so mutated headers reach the reader).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut deb = data.to_vec();
    strata_fuzz::fix_deb_tars(&mut deb);
    strata_debian::fuzz::deb(&deb);
});
