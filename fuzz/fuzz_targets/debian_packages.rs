//! A `Packages` index (strata-debian): stanzas, versions, Provides and dependency fields.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        strata_debian::fuzz::packages(text);
    }
});
