//! OCI documents (strata-oci): image index, manifest and configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_oci::image::{ImageConfig, Index, Manifest};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Index>(data);
    let _ = serde_json::from_slice::<Manifest>(data);
    let _ = serde_json::from_slice::<ImageConfig>(data);
});
