//! `strata run TARGET [-- CMD ARGS…]`: runs a command in an image, in a rootless sandbox
//! (see `strata-sandbox`). The exit status is the command's own (128 + signal when a signal
//! killed it); failures before the command starts exit with 125, a command that cannot be
//! found with 127 and one that cannot be executed with 126, as container engines do.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use strata_oci::image::ImageConfig;
use strata_oci::output::BuiltImage;
use strata_sandbox::{BindMount, IdMapping, LayerFile, RunRequest, Sandbox, SandboxError, Stdio};
use strata_store::Store;
use strata_transport::{Target, Transport};

use crate::args::{RegistryFlags, RunArgs};

/// Exit status of `strata run` when the sandbox could not start the command.
const SETUP_FAILED: i32 = 125;

/// Runs the command and exits with its status; never returns.
pub fn run(store_root: &Path, args: RunArgs, flags: &RegistryFlags) -> Result<()> {
    let code = match run_inner(store_root, args, flags) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            match err.downcast_ref::<SandboxError>() {
                Some(SandboxError::Exec { not_found, .. }) => {
                    if *not_found {
                        127
                    } else {
                        126
                    }
                }
                _ => SETUP_FAILED,
            }
        }
    };
    std::process::exit(code)
}

/// An image to run and what keeps its blobs alive.
struct Opened {
    image: BuiltImage,
    _opened: Option<strata_transport::OpenedImage>,
}

fn open_target(store: &Store, target: &str, flags: &RegistryFlags) -> Result<Opened> {
    let src = match Target::parse(target)? {
        Target::Spec(path) => {
            let spec = strata_spec::Spec::load(&path)?;
            let outcome = strata_build::build(
                &spec,
                store,
                &strata_build::BuildOptions::default(),
                &strata_build::NoReporter,
            )
            .with_context(|| format!("building {}", path.display()))?;
            return Ok(Opened {
                image: outcome.image,
                _opened: None,
            });
        }
        Target::Image(src) => src,
    };
    let client = match src {
        Transport::Registry(_) => Some(flags.client()?),
        Transport::Stdout => {
            bail!("run reads a spec, oci:DIR, docker-archive:FILE or docker://REF")
        }
        _ => None,
    };
    let opened = strata_transport::open(
        &src,
        client.as_ref(),
        &strata_registry::Platform::host(),
        &store.scratch_dir(),
    )
    .with_context(|| format!("opening {src}"))?;
    Ok(Opened {
        image: opened.image.clone(),
        _opened: Some(opened),
    })
}

fn run_inner(store_root: &Path, args: RunArgs, flags: &RegistryFlags) -> Result<i32> {
    let store = Store::open(store_root)?;
    // Held for the whole run, so `strata gc` does not remove the root file system in use.
    let _shared = store.lock_store(false)?;
    let target = open_target(&store, &args.target, flags)?;
    let image = &target.image;
    let config: ImageConfig = serde_json::from_slice(&image.config)
        .with_context(|| format!("{}: the image configuration is not valid", args.target))?;
    let host = strata_registry::Platform::host();
    if config.architecture != host.architecture {
        bail!(
            "{} is an image for {}, and this machine runs {}",
            args.target,
            config.architecture,
            host.architecture
        );
    }
    let ids = IdMapping::detect();
    let layers: Vec<LayerFile> = image
        .layers
        .iter()
        .map(|l| LayerFile {
            path: l.path.clone(),
            compression: l.compression,
        })
        .collect();
    let rootfs = strata_sandbox::prepare_rootfs(&store, image.config_digest.hex(), &layers, &ids)
        .context("unpacking the image")?;

    let mut sandbox = Sandbox::new(vec![rootfs], store.scratch_dir());
    sandbox.ids = ids;
    sandbox.network = args.network;
    for m in &args.mount {
        let mount = BindMount::parse(m).map_err(|e| anyhow::anyhow!("--mount {e}"))?;
        if !mount.source.exists() {
            bail!("--mount {m}: `{}` does not exist", mount.source.display());
        }
        sandbox.mounts.push(mount);
    }
    if args.tty && !std::io::stdin().is_terminal() {
        eprintln!("warning: -t without a terminal on stdin; the terminal is still allocated");
    }
    let request = RunRequest {
        command: args.command,
        user: args.user,
        workdir: args.workdir,
        env: args.env,
        tty: args.tty,
        // As with `docker run`: the command reads strata's stdin only with -i.
        stdin: if args.interactive {
            Stdio::Inherit
        } else {
            Stdio::Null
        },
    };
    let command = strata_sandbox::image_command(&config.config, request, &sandbox.roots(), &|k| {
        std::env::var(k).ok()
    })?;
    let status = sandbox.run(command)?;
    Ok(status.code())
}
