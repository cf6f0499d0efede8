//! `strata.toml` parsing and validation (strata-spec), then the canonical forms that name the
//! image.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_spec::{Part, Spec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = Spec::parse(text, Path::new("/fuzz/strata.toml")) {
        let _ = spec.canonical(Part::Base);
        let _ = spec.canonical(Part::User);
        let _ = spec.canonical_image();
        let _ = spec.account();
        let _ = spec.debian_settings(Part::Base);
        let _ = spec.debian_settings(Part::User);
    }
});
