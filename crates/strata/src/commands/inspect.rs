//! `strata inspect IMAGE`.

use std::io::Write;

use anyhow::{Result, bail};
use strata_transport::Transport;

use crate::args::InspectArgs;
use crate::progress::human_bytes;

/// Prints an image's references, digests, platform and layers (with the store objects in each).
pub fn run(args: InspectArgs) -> Result<()> {
    let image = match Transport::parse(&args.image)? {
        Transport::Oci(dir, tag) => strata_oci::read::read_oci_layout(&dir, tag.as_deref())?,
        Transport::DockerArchive(file) => strata_oci::read::read_docker_archive(&file)?,
        Transport::Stdout | Transport::Registry(_) | Transport::Disk(..) => {
            bail!(
                "inspect reads oci:DIR[:TAG] or docker-archive:FILE (pull a registry image first)"
            )
        }
    };
    let summary = image.summary();
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
            l.digest.short(),
            human_bytes(l.size),
            l.objects.join(" ")
        )?;
    }
    writeln!(out, "total:     {}", human_bytes(total))?;
    Ok(())
}
