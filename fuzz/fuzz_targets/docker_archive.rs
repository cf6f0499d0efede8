//! A docker-archive (`docker save` output) read back by strata-oci (`inspect`) and by
//! strata-coder (the check, which applies the layers). The first byte picks the form: odd, the
//! rest is the archive itself (checksums fixed up); even, it is `manifest.json`, the
//! configuration (`config.json`) and layers (`0.tar`, `1.tar`, ...) separated by `\n--\n`,
//! made into an archive here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{fix_tar_checksums, parts, tar_of, write};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let archive = if mode % 2 == 1 {
        let mut tar = rest.to_vec();
        fix_tar_checksums(&mut tar);
        tar
    } else {
        let parts = parts(rest, 6);
        let layers: Vec<Vec<u8>> = parts
            .iter()
            .skip(2)
            .map(|p| {
                let mut l = p.to_vec();
                fix_tar_checksums(&mut l);
                l
            })
            .collect();
        let mut named: Vec<(String, &[u8])> = vec![("manifest.json".to_owned(), parts[0])];
        if let Some(config) = parts.get(1) {
            named.push(("config.json".to_owned(), config));
        }
        for (i, l) in layers.iter().enumerate() {
            named.push((format!("{i}.tar"), l));
        }
        tar_of(&named)
    };
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("image.tar");
    if !write(&path, &archive) {
        return;
    }
    let _ = strata_oci::read::read_docker_archive(&path);
    let _ = strata_coder::open_docker_archive(&path);
});
