//! deb822 paragraphs (strata-debian): every field value also as a dependency list and every
//! `Version` field as a dpkg version, compared with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_debian::deb822;
use strata_debian::version::{Version, compare_versions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for para in deb822::paragraphs(text).flatten() {
        for (name, value) in para.fields() {
            if let Ok(deps) = deb822::parse_deps(value) {
                for group in &deps {
                    let _ = deb822::format_group(group);
                }
            }
            if name.eq_ignore_ascii_case("version")
                && let Ok(v) = Version::parse(value)
            {
                let _ = (v.epoch(), v.upstream(), v.revision());
                assert_eq!(
                    compare_versions(v.as_str(), v.as_str()),
                    std::cmp::Ordering::Equal
                );
            }
        }
    }
});
