//! The `strata` command line. All the work happens in the library crates; this file parses
//! arguments, draws progress, and prints results.

mod coder;
mod lock;
mod progress;
mod registry;
mod run;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use strata_build::{BuildOptions, BuildOutcome};
use strata_oci::compress::Compression;
use strata_spec::Spec;
use strata_store::Store;

use strata_transport::Transport;

use crate::registry::RegistryFlags;

/// Build reproducible, layered container images of developer workspaces, without a daemon.
///
/// A spec file (strata.toml) declares a workspace in two halves: [base], the shared environment
/// that rarely changes, and [user], the per-user additions. The image's name is the hash of the
/// base half and its tag the hash of the user half, so a configuration names its image, and the
/// same spec always gives the same bytes.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
struct Cli {
    /// The local store (layer cache and blobs). Default: $XDG_CACHE_HOME/strata.
    #[arg(long, global = true, env = "STRATA_STORE", value_name = "DIR")]
    store: Option<PathBuf>,

    #[command(flatten)]
    registry: RegistryFlags,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the image a spec describes and write it out.
    ///
    /// Prints NAME:TAG@sha256:DIGEST. Unchanged layers come from the store without being
    /// written again.
    ///
    /// Examples:
    ///   strata build examples/hello/strata.toml
    ///   strata build strata.toml --output oci:ws --compression zstd
    ///   strata build strata.toml --output docker-archive:ws.tar   # uncompressed layers
    ///   strata build strata.toml --output - | docker load
    #[command(verbatim_doc_comment)]
    Build(BuildArgs),
    /// Show an image's layers, their sizes, and the store objects in each.
    ///
    /// Examples:
    ///   strata inspect oci:strata-out/strata/0f3a...
    ///   strata inspect docker-archive:ws.tar --json
    #[command(verbatim_doc_comment)]
    Inspect(InspectArgs),
    /// Remove from the store every blob that no built image uses.
    Gc(GcArgs),
    /// Check an image against a platform's requirements, without a container engine.
    ///
    /// --coder checks Coder's workspace-image minimums and prints a checklist; the exit
    /// status is non-zero when a required item fails.
    ///
    /// Examples:
    ///   strata check oci:strata-out/strata/0f3a... --coder
    ///   strata check strata.toml --coder --json
    #[command(verbatim_doc_comment)]
    Check(coder::CheckArgs),
    /// Coder workspaces: templates that run a spec's image.
    #[command(subcommand)]
    Coder(coder::CoderCommand),
    /// Push a local image to a registry (blobs it already has are skipped).
    ///
    /// Examples:
    ///   strata push oci:strata-out/strata/0f3a... docker://registry.example:5000/ws
    ///   strata push docker-archive:ws.tar docker://127.0.0.1:5000/team/ws:v1
    #[command(verbatim_doc_comment)]
    Push(PushArgs),
    /// Pull an image from a registry into a local layout or archive.
    ///
    /// Example:
    ///   strata pull docker://127.0.0.1:5000/team/ws:v1 --output oci:./ws
    #[command(verbatim_doc_comment)]
    Pull(PullArgs),
    /// Copy an image between oci:, docker-archive: and docker:// locations.
    Copy(CopyArgs),
    /// Store credentials for a registry, as `docker login` does.
    ///
    /// Example:
    ///   echo "$PASS" | strata login registry.example --username me --password-stdin
    #[command(verbatim_doc_comment)]
    Login(LoginArgs),
    /// Resolve the spec's Debian packages and write the lock file (SPEC with extension .lock).
    ///
    /// `strata build` installs exactly the locked packages while the lock matches the spec,
    /// and never updates the lock itself.
    ///
    /// Example:
    ///   strata lock strata.toml     # writes strata.lock
    #[command(verbatim_doc_comment)]
    Lock(lock::LockArgs),
    /// Run a command in an image, in a rootless sandbox (no daemon, no root needed).
    ///
    /// The exit status is the command's (128 + signal if killed; 125 if the sandbox could
    /// not start it). Nothing is left behind: each run gets a throwaway overlay.
    ///
    /// Examples:
    ///   strata run strata.toml -- python3 hello_world.py
    ///   strata run -it oci:strata-out/strata/0f3a...
    ///   strata run docker-archive:ws.tar --mount .:/src:ro --workdir /src -- make
    #[command(verbatim_doc_comment)]
    Run(run::RunArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// The spec file.
    #[arg(value_name = "SPEC")]
    spec: PathBuf,
    /// Where to write the image: oci:DIR (OCI image layout), docker-archive:FILE, - (a
    /// docker-archive on stdout), or docker://HOST[:PORT]/REPO[:TAG] (push; without a tag, the
    /// image's own tag). Default: oci:./strata-out/NAME.
    #[arg(long, short, value_name = "DEST")]
    output: Option<String>,
    /// Layer compression. Default: gzip, except for docker-archive: and - outputs, whose
    /// layers are stored uncompressed anyway, so they are built uncompressed (the archive's
    /// bytes are the same either way; only the store's blobs differ).
    #[arg(long, value_parser = ["gzip", "zstd", "none"])]
    compression: Option<String>,
    /// Most layers the image may have (the last one is kept for customisation).
    #[arg(long, default_value_t = 100, value_name = "N")]
    max_layers: usize,
    /// Worker threads. Default: one per core. The image bytes never depend on it.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Clamp every file time to this Unix time, which is also the image's creation time.
    #[arg(
        long,
        env = "SOURCE_DATE_EPOCH",
        default_value_t = 1,
        value_name = "SECONDS"
    )]
    source_date_epoch: i64,
    /// Print a JSON result object on stdout instead of the reference.
    #[arg(long)]
    json: bool,
    /// Write the image even when a spec with [coder] fails `strata check --coder`.
    #[arg(long)]
    no_check: bool,
    /// Fail unless the lock file exists and matches the spec (never resolve packages).
    #[arg(long)]
    locked: bool,
    /// Use no network: build from the lock file and the packages in the store, or name the
    /// packages that are missing.
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// oci:DIR[:TAG] or docker-archive:FILE.
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct PushArgs {
    /// oci:DIR[:TAG] or docker-archive:FILE.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// docker://HOST[:PORT]/REPO[:TAG]; without a tag, the image's own tag.
    #[arg(value_name = "DEST")]
    dest: String,
    /// Print JSON (per-blob outcomes).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    /// docker://HOST[:PORT]/REPO[:TAG|@DIGEST].
    #[arg(value_name = "SOURCE")]
    source: String,
    /// oci:DIR[:TAG], docker-archive:FILE or -.
    #[arg(long, short, value_name = "DEST")]
    output: String,
    /// OS/ARCH[/VARIANT] to select from a multi-platform image. Default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CopyArgs {
    /// oci:DIR[:TAG], docker-archive:FILE or docker://REF.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// oci:DIR[:TAG], docker-archive:FILE, docker://REF or -.
    #[arg(value_name = "DEST")]
    dest: String,
    /// OS/ARCH[/VARIANT] to select from a multi-platform image. Default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct LoginArgs {
    /// The registry, HOST[:PORT].
    #[arg(value_name = "HOST")]
    host: String,
    /// User name.
    #[arg(long, short)]
    username: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, clap::Args)]
struct GcArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `println!` that treats a closed stdout (`strata ... | head`) as the reader's choice, not a
/// failure of strata.
macro_rules! out {
    ($($arg:tt)*) => {{
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, $($arg)*) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e.into());
            }
        }
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the failure and each cause after it.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let store_root = cli.store.clone().unwrap_or_else(Store::default_root);
    let flags = &cli.registry;
    match cli.command {
        Command::Build(args) => build(&store_root, args, flags),
        Command::Check(args) => coder::check(&store_root, args),
        Command::Coder(cmd) => coder::run(&store_root, cmd),
        Command::Push(args) => {
            let src = Transport::parse(&args.source)?;
            if matches!(src, Transport::Registry(_) | Transport::Stdout) {
                bail!(
                    "push reads oci:DIR or docker-archive:FILE; use `strata copy` between registries"
                );
            }
            let dest = Transport::parse(&args.dest)?;
            if !matches!(dest, Transport::Registry(_)) {
                bail!(
                    "push writes to docker://HOST/REPO[:TAG]; use `strata copy` for local outputs"
                );
            }
            copy_command(&src, &dest, flags, &store_root, None, args.json)
        }
        Command::Pull(args) => {
            let src = Transport::parse(&args.source)?;
            if !matches!(src, Transport::Registry(_)) {
                bail!("pull reads docker://HOST/REPO[:TAG]; use `strata copy` for local sources");
            }
            let dest = Transport::parse(&args.output)?;
            copy_command(
                &src,
                &dest,
                flags,
                &store_root,
                args.platform.as_deref(),
                args.json,
            )
        }
        Command::Copy(args) => {
            let src = Transport::parse(&args.source)?;
            let dest = Transport::parse(&args.dest)?;
            copy_command(
                &src,
                &dest,
                flags,
                &store_root,
                args.platform.as_deref(),
                args.json,
            )
        }
        Command::Login(args) => {
            registry::login(&args.host, args.username, args.password_stdin, flags)
        }
        Command::Inspect(args) => inspect(args),
        Command::Lock(args) => lock::run(&store_root, args),
        Command::Run(args) => run::run(&store_root, args, flags),
        Command::Gc(args) => {
            let store = Store::open(&store_root)?;
            let report = store.gc::<strata_build::LayerRecord>()?;
            // Root file systems unpacked for `strata run`: kept for the images the store
            // records, dropped for the others (a later run unpacks again).
            let rootfs_removed = {
                let _exclusive = store.lock_store(true)?;
                let ids = strata_sandbox::IdMapping::detect();
                strata_sandbox::remove_unused_rootfs(&store, &store.used_blobs()?, &ids)
                    .context("removing unpacked root file systems")?
            };
            if args.json {
                let mut json = serde_json::to_value(&report)?;
                json["rootfs_removed"] = rootfs_removed.into();
                out!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                out!(
                    "removed {} blobs ({} bytes), {} stale layer records and {} unpacked root file \
                     systems",
                    report.blobs_removed,
                    report.bytes_freed,
                    report.records_removed,
                    rootfs_removed
                );
            }
            Ok(())
        }
    }
}

fn copy_command(
    src: &Transport,
    dest: &Transport,
    flags: &RegistryFlags,
    store_root: &std::path::Path,
    platform: Option<&str>,
    json: bool,
) -> Result<()> {
    Store::open(store_root)?;
    let outcome = registry::copy(src, dest, flags, store_root, platform)?;
    let line = format!("{}@{}", outcome.reference, outcome.digest);
    if json {
        let text = serde_json::to_string_pretty(&outcome.json(dest))?;
        if matches!(dest, Transport::Stdout) {
            eprintln!("{text}")
        } else {
            out!("{text}")
        }
    } else if matches!(dest, Transport::Stdout) {
        eprintln!("{line}");
    } else {
        out!("{line}");
    }
    Ok(())
}

fn build(store_root: &std::path::Path, args: BuildArgs, flags: &RegistryFlags) -> Result<()> {
    let spec = Spec::load(&args.spec)?;
    let output = match &args.output {
        Some(dest) => Some(Transport::parse(dest)?),
        None => None,
    };
    if matches!(output, Some(Transport::Stdout)) && std::io::stdout().is_terminal() {
        bail!(
            "--output - writes a tar stream; redirect stdout to a file or pipe it to `docker load`"
        );
    }
    let compression: Compression = match (&args.compression, &output) {
        (Some(c), _) => c.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        // Compressing layers that the archive writer decompresses again is wasted work.
        (None, Some(Transport::DockerArchive(_) | Transport::Stdout)) => Compression::None,
        (None, _) => Compression::Gzip,
    };
    let opts = BuildOptions {
        compression,
        max_layers: args.max_layers,
        threads: args.threads.unwrap_or(BuildOptions::default().threads),
        source_date_epoch: args.source_date_epoch,
        locked: args.locked,
        offline: args.offline,
    };
    lock::preflight(&spec, args.locked, args.offline)?;
    let store = Store::open(store_root)?;
    let reporter = progress::Progress::new();
    let outcome = strata_build::build(&spec, &store, &opts, &reporter)
        .with_context(|| format!("building {}", args.spec.display()))?;
    if spec.coder.is_some() && !args.no_check {
        coder::gate(&outcome)?;
    }
    let output = output.unwrap_or_else(|| {
        Transport::Oci(PathBuf::from("strata-out").join(&outcome.image.name), None)
    });
    reporter.phase(&format!("writing {output}"));
    clean_up_on_interrupt(&output);
    let client = match output {
        Transport::Registry(_) => Some(flags.client()?),
        _ => None,
    };
    // A push sends the manifest bytes as built, so the digest printed below is the registry's.
    let written = strata_transport::write(
        &outcome.image,
        &output,
        client.as_ref(),
        &reporter,
        &store.root().join("tmp"),
    )
    .with_context(|| format!("writing {output}"))?;
    reporter.finish();

    let reference = format!(
        "{}@{}",
        outcome.image.reference(),
        outcome.image.manifest_digest
    );
    if args.json {
        let mut json = result_json(&outcome, &output);
        if let strata_transport::Written::Pushed(report) = &written {
            json["pushed"] = registry::blob_outcomes(report);
        }
        if matches!(output, Transport::Stdout) {
            eprintln!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            out!("{}", serde_json::to_string_pretty(&json)?);
        }
    } else if matches!(output, Transport::Stdout) {
        eprintln!("{reference}");
    } else {
        out!("{reference}");
    }
    Ok(())
}

/// On Ctrl-C or SIGTERM while the output is written, removes this process's temporary files
/// beside the output, so nothing half-written is left behind, and exits 130.
fn clean_up_on_interrupt(output: &Transport) {
    let target = match output {
        Transport::Oci(dir, _) => dir.clone(),
        Transport::DockerArchive(file) => file.clone(),
        Transport::Stdout | Transport::Registry(_) => return,
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = strata_oci::output::temp_prefix();
    // Failing to install the handler only loses the clean-up, never the build.
    let _ = ctrlc::set_handler(move || {
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let path = entry.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
        eprintln!("interrupted: removed partial output");
        std::process::exit(130);
    });
}

fn result_json(outcome: &BuildOutcome, output: &Transport) -> serde_json::Value {
    serde_json::json!({
        "name": outcome.image.name,
        "tag": outcome.image.tag,
        "reference": outcome.image.reference(),
        "digest": outcome.image.manifest_digest,
        "config_digest": outcome.image.config_digest,
        "output": output.to_string(),
        "layers": outcome.layers,
    })
}

fn inspect(args: InspectArgs) -> Result<()> {
    let summary = match Transport::parse(&args.image)? {
        Transport::Oci(dir, tag) => strata_oci::read::read_oci_layout(&dir, tag.as_deref())?,
        Transport::DockerArchive(file) => strata_oci::read::read_docker_archive(&file)?,
        Transport::Stdout | Transport::Registry(_) => {
            bail!(
                "inspect reads oci:DIR[:TAG] or docker-archive:FILE (pull a registry image first)"
            )
        }
    };
    if args.json {
        out!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for r in &summary.references {
        writeln!(out, "reference: {r}")?;
    }
    if let Some(d) = &summary.manifest_digest {
        writeln!(out, "manifest:  {d}")?;
    }
    writeln!(out, "config:    {}", summary.config_digest)?;
    writeln!(
        out,
        "platform:  {}/{}",
        summary.config.os, summary.config.architecture
    )?;
    writeln!(out, "layers:    {}", summary.layers.len())?;
    let total: u64 = summary.layers.iter().map(|l| l.size).sum();
    for (i, l) in summary.layers.iter().enumerate() {
        writeln!(
            out,
            "  {:>3}  {}  {:>10}  {}",
            i + 1,
            &l.digest[..l.digest.len().min(19)],
            progress::human_bytes(l.size),
            l.objects.join(" ")
        )?;
    }
    writeln!(out, "total:     {}", progress::human_bytes(total))?;
    Ok(())
}
