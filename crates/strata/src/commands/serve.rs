//! `strata serve --listen ADDR --backend docker://HOST/REPO`: the server lives in
//! `strata-serve`; this file only turns the arguments into its configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_store::Store;
use strata_transport::Transport;

use crate::args::{RegistryFlags, ServeArgs};

/// Runs the server until interrupted.
pub fn run(store_root: &Path, args: ServeArgs, flags: &RegistryFlags) -> Result<()> {
    let backend = match Transport::parse(&args.backend)? {
        Transport::Registry(r) if r.tag.is_none() && r.digest.is_none() => r,
        Transport::Registry(_) => bail!(
            "--backend {}: name a repository without a tag or digest (images are stored under \
             their cache keys as tags)",
            args.backend
        ),
        _ => bail!(
            "--backend {}: must be docker://HOST/REPO, the registry repository images are \
             stored in",
            args.backend
        ),
    };
    let store = Store::open(store_root)?;
    let config = strata_serve::Config {
        backend_plain_http: flags.tls_verify == Some(false),
        client: Arc::new(flags.client()?),
        backend,
        redirect_blobs: args.redirect_blobs,
        specs: args.specs,
        store: store_root.to_owned(),
        debian_cache: super::lock::debian_cache(&store)?,
        build_wait: Duration::from_secs(args.build_wait),
        failure_ttl: Duration::from_secs(args.failure_ttl),
        resolve_ttl: Duration::from_secs(args.resolve_ttl),
        max_builds: args.max_builds,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        peers: args.peers,
        advertise: args.advertise,
        log: Arc::new(|msg: &str| eprintln!("strata serve: {msg}")),
    };
    strata_serve::serve(args.listen, config).context("strata serve")
}
