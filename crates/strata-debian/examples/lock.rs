//! Resolves packages against Debian bookworm and prints the lock as TOML:
//! `cargo run -p strata-debian --example lock -- [--no-essential] PKG...`

use strata_debian::{Reporter, Request, resolve};

struct Stderr(std::time::Instant);

impl Reporter for Stderr {
    fn message(&self, msg: &str) {
        eprintln!("[{:>8.3}s] {msg}", self.0.elapsed().as_secs_f64());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut req = Request::default();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--no-essential" => req.essential = false,
            "--recommends" => req.recommends = true,
            _ => req.packages.push(a),
        }
    }
    let cache = std::env::temp_dir().join("strata-debian-test-cache");
    let t = std::time::Instant::now();
    let lock = resolve(&req, &cache, &Stderr(t))?;
    eprintln!("{} packages in {:?}", lock.packages.len(), t.elapsed());
    print!("{}", lock.to_toml()?);
    Ok(())
}
