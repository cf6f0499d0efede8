//! `strata build SPEC [--output DEST]`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use strata_build::{BuildOptions, BuildOutcome};
use strata_oci::compress::Compression;
use strata_spec::Spec;
use strata_store::Store;
use strata_transport::{Transport, Written};

use crate::args::{BuildArgs, RegistryFlags};
use crate::progress;

/// Builds the spec's image and writes it to `--output`.
pub fn run(store_root: &Path, args: BuildArgs, flags: &RegistryFlags) -> Result<()> {
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
        // A disk image unpacks the layers again: compressing them would be wasted work.
        (None, Some(Transport::Disk(..))) => Compression::None,
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
    for note in strata_debian::preflight::preflight(&spec, args.locked, args.offline)? {
        eprintln!("strata: {note}");
    }
    let store = Store::open(store_root)?;
    let reporter = progress::Progress::new();
    let outcome = strata_build::build(&spec, &store, &opts, &reporter)
        .with_context(|| format!("building {}", args.spec.display()))?;
    if spec.coder.is_some() && !args.no_check {
        super::check::gate(&outcome)?;
    }
    let output = output.unwrap_or_else(|| {
        Transport::Oci(PathBuf::from("strata-out").join(&outcome.image.name), None)
    });
    if let Transport::Disk(format, file) = &output {
        reporter.phase(&format!("writing {output}"));
        clean_up_on_interrupt(&output);
        let disk = super::disk::write(
            &spec,
            &store,
            &outcome,
            *format,
            file,
            args.source_date_epoch,
        )
        .with_context(|| format!("writing {output}"))?;
        reporter.finish();
        let pinned = format!(
            "{}@{}",
            outcome.image.reference(),
            outcome.image.manifest_digest
        );
        if args.json {
            let mut json = result_json(&outcome, &output);
            json["image"] = pinned.into();
            json["disk"] = super::disk::json(&disk);
            out!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            out!("{output} ({} MiB disk) from {pinned}", disk.disk_size >> 20);
        }
        return Ok(());
    }
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
        &store.scratch_dir(),
    )
    .with_context(|| format!("writing {output}"))?;
    reporter.finish();

    // What was written: for a push, the repository and tag the registry now holds (the
    // manifest bytes are the ones built, so the digest is the same).
    let reference = match &written {
        Written::Pushed { reference, .. } => reference.to_string(),
        Written::Local => outcome.image.reference(),
    };
    let pinned = format!("{reference}@{}", outcome.image.manifest_digest);
    if args.json {
        let mut json = result_json(&outcome, &output);
        if let Written::Pushed { reference, report } = &written {
            json["reference"] = reference.to_string().into();
            json["digest"] = report.manifest_digest.clone().into();
            json["pushed"] = super::copy::blob_outcomes(report);
        }
        json["image"] = pinned.clone().into();
        if matches!(output, Transport::Stdout) {
            eprintln!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            out!("{}", serde_json::to_string_pretty(&json)?);
        }
    } else if matches!(output, Transport::Stdout) {
        eprintln!("{pinned}");
    } else {
        out!("{pinned}");
    }
    Ok(())
}

/// On Ctrl-C or SIGTERM while the output is written, removes this process's temporary files
/// beside the output, so nothing half-written is left behind, and exits 130.
fn clean_up_on_interrupt(output: &Transport) {
    let target = match output {
        Transport::Oci(dir, _) => dir.clone(),
        Transport::DockerArchive(file) | Transport::Disk(_, file) => file.clone(),
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
