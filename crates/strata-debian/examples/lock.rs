//! Resolves packages against Debian bookworm and prints the lock as TOML:
//! `cargo run -p strata-debian --example lock -- [--no-essential] [--recommends] [--fetch]
//! [--cache DIR] PKG...`; `--fetch` also downloads and extracts them.

use strata_debian::{Reporter, Request, resolve};

struct Stderr(std::time::Instant);

impl Reporter for Stderr {
    fn message(&self, msg: &str) {
        eprintln!("[{:>8.3}s] {msg}", self.0.elapsed().as_secs_f64());
    }
}

struct Quiet;

impl Reporter for Quiet {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut req = Request::default();
    let mut do_fetch = false;
    let mut cache = std::env::temp_dir().join("strata-debian-test-cache");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--no-essential" => req.essential = false,
            "--recommends" => req.recommends = true,
            "--fetch" => do_fetch = true,
            "--cache" => cache = args.next().ok_or("--cache needs a directory")?.into(),
            _ => req.packages.push(a),
        }
    }
    let t = std::time::Instant::now();
    let lock = resolve(&req, &cache, &Stderr(t))?;
    eprintln!("{} packages in {:?}", lock.packages.len(), t.elapsed());
    if do_fetch {
        let t = std::time::Instant::now();
        let pkgs = strata_debian::fetch(&lock, &cache, &Quiet)?;
        let files: usize = pkgs.iter().map(|p| p.tree.len()).sum();
        let bytes: u64 = pkgs.iter().map(|p| p.tree.content_size()).sum();
        eprintln!(
            "fetched {} packages ({} entries, {} MB) in {:?}",
            pkgs.len(),
            files,
            bytes / 1_000_000,
            t.elapsed()
        );
    }
    print!("{}", lock.to_toml()?);
    Ok(())
}
