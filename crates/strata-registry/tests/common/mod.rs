//! Test helpers: small hand-made OCI images. The registry process, tool requirements and
//! request-log helpers come from the shared `strata-test-support` crate.

#![allow(dead_code, missing_docs, unused_imports)]

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use strata_registry::{Blob, MEDIA_TYPE_OCI_MANIFEST, PushImage};
pub use strata_test_support::{Auth as RegistryAuth, Registry, require, upload_requests};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The layer media type used by the test images.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// A tar archive holding the given regular files.
pub fn tar_layer(files: &[(&str, &[u8], u32)]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, *data)?;
    }
    builder.into_inner()
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a blob file named by its digest into `dir`.
pub fn write_blob(dir: &Path, bytes: &[u8], media_type: &str) -> std::io::Result<Blob> {
    let digest = sha256(bytes);
    let path = dir.join(digest.trim_start_matches("sha256:"));
    std::fs::write(&path, bytes)?;
    Ok(Blob {
        digest,
        size: bytes.len() as u64,
        media_type: media_type.to_string(),
        path,
        mount_from: None,
    })
}

/// An OCI image with the given (uncompressed tar) layers; `extra_config`
/// is merged into the config's `config` object (e.g. an entrypoint).
pub fn make_image(
    dir: &Path,
    layers: &[Vec<u8>],
    extra_config: serde_json::Value,
) -> std::io::Result<PushImage> {
    std::fs::create_dir_all(dir)?;
    let layer_blobs = layers
        .iter()
        .map(|l| write_blob(dir, l, LAYER_TAR))
        .collect::<std::io::Result<Vec<_>>>()?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": extra_config,
        "rootfs": {
            "type": "layers",
            "diff_ids": layer_blobs.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(),
        },
        "history": layer_blobs.iter().map(|_| serde_json::json!({"created_by": "strata test"})).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_blob = write_blob(
        dir,
        &config_bytes,
        "application/vnd.oci.image.config.v1+json",
    )?;
    let descriptor = |b: &Blob| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": descriptor(&config_blob),
        "layers": layer_blobs.iter().map(descriptor).collect::<Vec<_>>(),
    });
    Ok(PushImage {
        manifest: serde_json::to_vec(&manifest)?,
        manifest_media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
        config: config_blob,
        layers: layer_blobs,
    })
}
