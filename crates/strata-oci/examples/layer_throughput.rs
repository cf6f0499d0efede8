//! Measures layer writing throughput: walks a host directory and writes it as one layer to
//! nowhere, printing the digests and the speed.
//!
//! `DIR` may also be `synthetic:MIB`: that many MiB of in-memory text-like files.
//!
//! `cargo run --release -p strata-oci --example layer_throughput -- DIR [gzip|zstd|none] [THREADS]`

use std::time::Instant;

use strata_fstree::{Entry, ImagePath, Tree, WalkOptions, walk};
use strata_oci::compress::Compression;
use strata_oci::layer::{LayerOptions, write_layer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: layer_throughput DIR [COMPRESSION] [THREADS]")?;
    let compression: Compression = args.next().as_deref().unwrap_or("gzip").parse()?;
    let threads: usize = args.next().as_deref().unwrap_or("0").parse()?;

    let tree = match dir.strip_prefix("synthetic:") {
        // In-memory text-like files, to measure compression without the file system.
        Some(mib) => {
            let mib: usize = mib.parse()?;
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let files = (0..mib).map(|i| {
                let mut data = Vec::with_capacity(1 << 20);
                while data.len() < 1 << 20 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    data.extend_from_slice(format!("{} {:x} ", x % 1000, x >> 52).as_bytes());
                }
                data.truncate(1 << 20);
                Entry::inline_file(
                    ImagePath::new(&format!("f{i:05}")).expect("name"),
                    0o644,
                    data,
                )
            });
            Tree::from_entries(files)
        }
        None => {
            walk(
                dir.as_ref(),
                &ImagePath::new("data")?.into(),
                &WalkOptions::default(),
            )?
            .0
        }
    };
    let entries: Vec<&Entry> = tree.entries().iter().collect();
    let opts = LayerOptions {
        compression,
        threads,
        source_date_epoch: 0,
    };
    let start = Instant::now();
    let d = write_layer(&entries, &opts, std::io::sink())?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{compression} threads={threads}: {} entries, tar {} B -> blob {} B ({:.1}%) in {secs:.2}s = {:.1} MB/s",
        entries.len(),
        d.uncompressed_size,
        d.size,
        100.0 * d.size as f64 / d.uncompressed_size as f64,
        d.uncompressed_size as f64 / secs / 1e6,
    );
    println!("diff_id {}\ndigest  {}", d.diff_id, d.digest);
    Ok(())
}
