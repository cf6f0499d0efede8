//! `strata run TARGET [-- CMD ARGS…]`: runs a command in an image, in a rootless sandbox
//! (see `strata-sandbox`). The exit status is the command's own (128 + signal when a signal
//! killed it); failures before the command starts exit with 125, a command that cannot be
//! found with 127 and one that cannot be executed with 126, as container engines do.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use strata_oci::image::ImageConfig;
use strata_oci::output::BuiltImage;
use strata_sandbox::{BindMount, Command, IdMapping, LayerFile, Sandbox, SandboxError, Stdio};
use strata_store::Store;
use strata_transport::Transport;

use crate::registry::RegistryFlags;

/// Exit status of `strata run` when the sandbox could not start the command.
const SETUP_FAILED: i32 = 125;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A spec file (built first), oci:DIR[:TAG], docker-archive:FILE or docker://REF.
    #[arg(value_name = "TARGET")]
    target: String,
    /// The command and its arguments, after `--`. Default: the image's entrypoint and cmd,
    /// else /bin/sh.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
    /// Run as USER[:GROUP] (names from the image's /etc/passwd and /etc/group, or numbers).
    #[arg(long, short, value_name = "USER")]
    user: Option<String>,
    /// Working directory inside the image.
    #[arg(long, short, value_name = "DIR")]
    workdir: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass strata's own); repeatable.
    #[arg(long, short, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Bind-mount a host path: SRC:DST, or SRC:DST:ro for read-only; repeatable.
    #[arg(long, value_name = "SRC:DST[:ro]")]
    mount: Vec<String>,
    /// Share the host's network (default: none, only a loopback interface).
    #[arg(long)]
    network: bool,
    /// Keep standard input open (it always is; accepted for `docker run -i` habits).
    #[arg(long, short)]
    interactive: bool,
    /// Give the command a terminal (use with -i: `strata run -it IMAGE`).
    #[arg(long, short)]
    tty: bool,
}

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
struct Target {
    image: BuiltImage,
    _opened: Option<strata_transport::OpenedImage>,
}

fn open_target(store: &Store, target: &str, flags: &RegistryFlags) -> Result<Target> {
    let is_transport = ["oci:", "docker-archive:", "docker://"]
        .iter()
        .any(|p| target.starts_with(p));
    if !is_transport {
        let path = PathBuf::from(target);
        let spec = strata_spec::Spec::load(&path)?;
        let outcome = strata_build::build(
            &spec,
            store,
            &strata_build::BuildOptions::default(),
            &strata_build::NoReporter,
        )
        .with_context(|| format!("building {}", path.display()))?;
        return Ok(Target {
            image: outcome.image,
            _opened: None,
        });
    }
    let src = Transport::parse(target)?;
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
        &store.root().join("tmp"),
    )
    .with_context(|| format!("opening {src}"))?;
    Ok(Target {
        image: opened.image.clone(),
        _opened: Some(opened),
    })
}

fn run_inner(store_root: &Path, args: RunArgs, flags: &RegistryFlags) -> Result<i32> {
    let _ = args.interactive;
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
    let key = strata_store::digest_hex(&image.config_digest)?.to_owned();
    let rootfs = strata_sandbox::prepare_rootfs(&store, &key, &layers, &ids)
        .context("unpacking the image")?;

    let mut sandbox = Sandbox::new(vec![rootfs], store.root().join("tmp"));
    sandbox.ids = ids;
    sandbox.network = args.network;
    for m in &args.mount {
        let mount = BindMount::parse(m).map_err(|e| anyhow::anyhow!("--mount {e}"))?;
        if !mount.source.exists() {
            bail!("--mount {m}: `{}` does not exist", mount.source.display());
        }
        sandbox.mounts.push(mount);
    }

    let run = &config.config;
    let user_spec = args
        .user
        .clone()
        .or_else(|| run.user.clone())
        .unwrap_or_default();
    let user = strata_sandbox::resolve_user(&user_spec, &sandbox.roots())?;
    let workdir = args
        .workdir
        .clone()
        .or_else(|| run.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        bail!("--workdir `{workdir}` must be an absolute path");
    }
    let env = environment(&run.env, &args.env, user.home.as_deref(), args.tty)?;
    let entrypoint = run.entrypoint.clone().unwrap_or_default();
    let rest = if args.command.is_empty() {
        run.cmd.clone().unwrap_or_default()
    } else {
        args.command.clone()
    };
    let mut argv: Vec<String> = entrypoint.into_iter().chain(rest).collect();
    if argv.is_empty() {
        argv.push("/bin/sh".into());
    }
    if args.tty && !std::io::stdin().is_terminal() {
        eprintln!("warning: -t without a terminal on stdin; the terminal is still allocated");
    }
    let status = sandbox.run(Command {
        argv,
        env,
        user,
        workdir,
        tty: args.tty,
        stdin: Stdio::Inherit,
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
    })?;
    Ok(status.code())
}

/// The image's environment, then HOME, PATH and TERM defaults, then `--env` entries.
fn environment(
    image: &[String],
    overrides: &[String],
    home: Option<&str>,
    tty: bool,
) -> Result<Vec<String>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| match env
        .iter_mut()
        .find(|(key, _)| key == k)
    {
        Some(entry) => entry.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    for e in image {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(&mut env, k, v);
    }
    let has = |env: &Vec<(String, String)>, k: &str| env.iter().any(|(key, _)| key == k);
    if !has(&env, "PATH") {
        set(&mut env, "PATH", strata_sandbox::DEFAULT_PATH);
    }
    if !has(&env, "HOME") {
        set(&mut env, "HOME", home.unwrap_or("/"));
    }
    if tty && !has(&env, "TERM") {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        set(&mut env, "TERM", &term);
    }
    for e in overrides {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => set(&mut env, k, v),
            Some(_) => bail!("--env `{e}`: expected KEY=VALUE"),
            None => {
                if let Ok(v) = std::env::var(e) {
                    set(&mut env, e, &v);
                }
            }
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}
