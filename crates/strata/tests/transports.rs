//! One round trip every transport passes: an image written to `oci:`, `docker-archive:` and
//! `docker://` (a real registry on 127.0.0.1) and read back into an OCI layout has the same
//! config (byte for byte) and layers whose uncompressed contents match the config's diff_ids.
//! A new transport is proven by adding it to `TRANSPORTS`.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// The transports under test; `docker` needs a registry.
const TRANSPORTS: [&str; 3] = ["oci", "docker-archive", "docker"];

/// The manifest and config of the one image in an OCI layout, with the config's digest.
fn read_layout(dir: &Path) -> (Value, String, Vec<u8>) {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index:#}");
    let blob = |digest: &str| {
        let path = dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        assert_eq!(
            sha256_file(&path),
            digest,
            "blob {} is corrupt",
            path.display()
        );
        fs::read(path).unwrap()
    };
    let manifest: Value =
        serde_json::from_slice(&blob(manifests[0]["digest"].as_str().unwrap())).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let config = blob(&config_digest);
    (manifest, config_digest, config)
}

/// Checks that every layer of the layout uncompresses to the diff_id the config names.
fn assert_layers_match_diff_ids(dir: &Path, manifest: &Value, config: &[u8]) {
    let config: Value = serde_json::from_slice(config).unwrap();
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let media = layer["mediaType"].as_str().unwrap();
        let digest = layer["digest"].as_str().unwrap();
        let path = dir.join("blobs/sha256").join(&digest[7..]);
        let decompress = if media.ends_with("gzip") {
            "gzip -dc"
        } else if media.ends_with("zstd") {
            "zstd -dc"
        } else {
            "cat"
        };
        assert_eq!(
            sha256_decompressed(decompress, &path),
            diff_id,
            "{media} {digest}"
        );
    }
}

#[test]
fn every_transport_round_trips_an_image() {
    if !require(&["docker-registry", "gzip", "zstd", "sha256sum"]) {
        return;
    }
    let work = Work::new();
    work.file("etc/motd", "round trip\n", 0o644);
    work.file("bin/tool", "#!/bin/sh\necho tool\n", 0o755);
    work.symlink("bin/alias", "tool");
    work.write_spec(
        "[image]\nname = \"strata-e2e/transports\"\n\n[base]\ntree = [\n  { src = \"etc\", dest = \"/etc\" },\n  { src = \"bin\", dest = \"/usr/bin\" },\n]\n\n[config]\nentrypoint = [\"/usr/bin/tool\"]\n",
    );
    let original = work.out("original");
    work.build(&format!("oci:{}", original.display()), &[]);
    let (manifest, config_digest, config) = read_layout(&original);
    assert_layers_match_diff_ids(&original, &manifest, &config);

    let registry = Registry::start(Auth::None);
    for transport in TRANSPORTS {
        let location = match transport {
            "oci" => format!("oci:{}", work.out("via-oci").display()),
            "docker-archive" => format!("docker-archive:{}", work.out("via.tar").display()),
            "docker" => registry.docker("strata-e2e/transports:round-trip"),
            other => panic!("no location for transport {other}"),
        };
        run_ok(
            work.strata()
                .args(["copy", &format!("oci:{}", original.display()), &location]),
        );
        let back = work.out(&format!("back-{transport}"));
        run_ok(
            work.strata()
                .args(["copy", &location, &format!("oci:{}", back.display())]),
        );
        let (manifest, digest, bytes) = read_layout(&back);
        assert_eq!(
            digest, config_digest,
            "{transport}: the config changed on the way"
        );
        assert_eq!(bytes, config, "{transport}: the config changed on the way");
        assert_layers_match_diff_ids(&back, &manifest, &bytes);
    }
}
