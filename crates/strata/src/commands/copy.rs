//! `strata push`, `strata pull` and `strata copy`: one operation, reading an image from one
//! location and writing it to another.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use strata_registry::{BlobOutcome, Platform, PushReport};
use strata_store::Store;
use strata_transport::{Transport, Written};

use crate::args::{CopyArgs, PullArgs, PushArgs, RegistryFlags};
use crate::progress::Progress;

/// `strata push SOURCE docker://DEST`.
pub fn push(store_root: &Path, args: PushArgs, flags: &RegistryFlags) -> Result<()> {
    let src = Transport::parse(&args.source)?;
    if matches!(src, Transport::Registry(_) | Transport::Stdout) {
        bail!("push reads oci:DIR or docker-archive:FILE; use `strata copy` between registries");
    }
    let dest = Transport::parse(&args.dest)?;
    if !matches!(dest, Transport::Registry(_)) {
        bail!("push writes to docker://HOST/REPO[:TAG]; use `strata copy` for local outputs");
    }
    print_copy(&src, &dest, flags, store_root, None, args.json)
}

/// `strata pull docker://SOURCE --output DEST`.
pub fn pull(store_root: &Path, args: PullArgs, flags: &RegistryFlags) -> Result<()> {
    let src = Transport::parse(&args.source)?;
    if !matches!(src, Transport::Registry(_)) {
        bail!("pull reads docker://HOST/REPO[:TAG]; use `strata copy` for local sources");
    }
    let dest = Transport::parse(&args.output)?;
    print_copy(
        &src,
        &dest,
        flags,
        store_root,
        args.platform.as_deref(),
        args.json,
    )
}

/// `strata copy SOURCE DEST`.
pub fn copy(store_root: &Path, args: CopyArgs, flags: &RegistryFlags) -> Result<()> {
    let src = Transport::parse(&args.source)?;
    let dest = Transport::parse(&args.dest)?;
    print_copy(
        &src,
        &dest,
        flags,
        store_root,
        args.platform.as_deref(),
        args.json,
    )
}

fn print_copy(
    src: &Transport,
    dest: &Transport,
    flags: &RegistryFlags,
    store_root: &Path,
    platform: Option<&str>,
    json: bool,
) -> Result<()> {
    let store = Store::open(store_root)?;
    let outcome = copy_image(src, dest, flags, &store, platform)?;
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

fn copy_image(
    src: &Transport,
    dest: &Transport,
    flags: &RegistryFlags,
    store: &Store,
    platform: Option<&str>,
) -> Result<CopyOutcome> {
    if matches!(dest, Transport::Stdout) && std::io::stdout().is_terminal() {
        bail!("`-` writes a tar stream; redirect stdout to a file or pipe it to `docker load`");
    }
    let needs_client =
        matches!(src, Transport::Registry(_)) || matches!(dest, Transport::Registry(_));
    let client = if needs_client {
        Some(flags.client()?)
    } else {
        None
    };
    let platform = match platform {
        Some(p) => parse_platform(p)?,
        None => Platform::host(),
    };
    let scratch = store.scratch_dir();
    let progress = Progress::new();
    progress.phase(&format!("reading {src}"));
    let opened = strata_transport::open(src, client.as_ref(), &platform, &scratch)
        .with_context(|| format!("reading {src}"))?;
    progress.phase(&format!("writing {dest}"));
    let written = strata_transport::write_from(
        &opened.image,
        dest,
        client.as_ref(),
        &progress,
        &scratch,
        Some(src),
    )
    .with_context(|| format!("writing {dest}"))?;
    progress.finish();
    Ok(match written {
        Written::Pushed { reference, report } => CopyOutcome {
            // Name the image as the destination now knows it.
            reference: reference.to_string(),
            digest: report.manifest_digest.clone(),
            pushed: Some(report),
        },
        Written::Local => CopyOutcome {
            reference: match dest {
                Transport::Oci(_, Some(tag)) => format!("{}:{tag}", opened.image.name),
                _ => opened.image.reference(),
            },
            digest: opened.image.manifest_digest.to_string(),
            pushed: None,
        },
    })
}

/// What a copy did.
struct CopyOutcome {
    /// NAME:TAG of the image copied.
    reference: String,
    /// Manifest digest at the destination.
    digest: String,
    /// Per-blob outcomes when pushed.
    pushed: Option<PushReport>,
}

impl CopyOutcome {
    /// A JSON summary for `--json`.
    fn json(&self, dest: &Transport) -> serde_json::Value {
        let blobs = self
            .pushed
            .as_ref()
            .map(blob_outcomes)
            .unwrap_or_else(|| serde_json::json!([]));
        serde_json::json!({
            "destination": dest.to_string(),
            "digest": self.digest,
            "blobs": blobs,
        })
    }
}

/// Per-blob outcomes of a push, for `--json`: `uploaded`, `skipped` (the registry had it) or
/// `mounted` (from another repository of the same registry).
pub fn blob_outcomes(report: &PushReport) -> serde_json::Value {
    report
        .blobs
        .iter()
        .map(|b| {
            serde_json::json!({
                "digest": b.digest,
                "size": b.size,
                "outcome": match b.outcome {
                    BlobOutcome::Uploaded => "uploaded",
                    BlobOutcome::Skipped => "skipped",
                    BlobOutcome::Mounted => "mounted",
                },
            })
        })
        .collect()
}

fn parse_platform(s: &str) -> Result<Platform> {
    let mut parts = s.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
            Ok(Platform::new(os, arch, variant))
        }
        _ => bail!("--platform `{s}`: expected OS/ARCH[/VARIANT], e.g. linux/amd64"),
    }
}
