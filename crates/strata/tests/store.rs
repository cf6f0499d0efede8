//! The store shared by concurrent builds: locks keep every process from seeing a partial blob
//! or writing the same layer twice at once.

mod common;

use std::process::Stdio;

use common::{Work, stdout};

#[test]
fn concurrent_builds_sharing_one_store_agree_and_leave_a_sound_store() {
    let work = Work::new();
    // Big enough (16 MiB of varied bytes) that the builds overlap while writing the layer.
    let mut data = Vec::with_capacity(16 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 16 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    work.file("big/blob", &data, 0o644);
    work.file("small/a", "a\n", 0o644);
    work.write_spec(
        "[base]\ntree = [\n  { src = \"big\", dest = \"/opt/big\" },\n  { src = \"small\", dest = \"/opt/small\" },\n]\n",
    );

    let children: Vec<_> = (0..4)
        .map(|i| {
            work.strata()
                .arg("build")
                .arg(work.spec())
                .arg("--output")
                .arg(format!("oci:{}", work.out(&format!("out-{i}")).display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn strata")
        })
        .collect();
    let mut refs = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait for strata");
        assert!(
            out.status.success(),
            "a concurrent build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        refs.push(stdout(&out).trim().to_owned());
    }
    assert!(
        refs.windows(2).all(|w| w[0] == w[1]),
        "concurrent builds printed different images: {refs:?}"
    );

    // Every blob in the store still hashes to its name, and nothing is left in tmp/.
    let blobs = work.store().join("v1/blobs/sha256");
    for entry in std::fs::read_dir(&blobs).expect("list blobs") {
        let path = entry.expect("blob entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            common::sha256_file(&path),
            format!("sha256:{name}"),
            "{} is corrupt",
            path.display()
        );
    }
    let tmp: Vec<_> = std::fs::read_dir(work.store().join("v1/tmp"))
        .expect("list tmp")
        .collect();
    assert!(tmp.is_empty(), "temporary files left in the store: {tmp:?}");

    // And a later build finds every layer cached.
    let warm = work.build(&format!("oci:{}", work.out("warm").display()), &[]);
    assert!(
        warm.layers().iter().all(|l| l["cached"] == true),
        "after concurrent builds, a rebuild should reuse every layer"
    );
}
