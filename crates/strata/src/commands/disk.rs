//! Disk outputs of `strata build` (`raw:FILE`, `qcow2:FILE`, `iso:FILE`): the built image made into a
//! bootable disk by `strata-vm`.

use std::path::Path;

use anyhow::{Result, bail};
use strata_build::BuildOutcome;
use strata_spec::Spec;
use strata_store::Store;
use strata_transport::DiskFormat;
use strata_vm::{DiskReport, DiskRequest, Format};

/// Writes the disk image of the built image to `file`.
pub fn write(
    spec: &Spec,
    store: &Store,
    outcome: &BuildOutcome,
    format: DiskFormat,
    file: &Path,
    source_date_epoch: i64,
) -> Result<DiskReport> {
    if spec.boot.is_none() {
        bail!(
            "{}: {}:FILE writes a bootable disk, which needs a [boot] table in the spec \
             (e.g. `[boot]` with `hostname = \"ws\"`; see docs/spec.md)",
            spec.path.display(),
            format.name()
        );
    }
    let sde = u64::try_from(source_date_epoch)
        .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH must not be negative for a disk image"))?;
    let req = DiskRequest {
        spec,
        image: &outcome.image,
        store,
        format: match format {
            DiskFormat::Raw => Format::Raw,
            DiskFormat::Qcow2 => Format::Qcow2,
            DiskFormat::Iso => Format::Iso,
        },
        output: file,
        source_date_epoch: sde,
    };
    Ok(strata_vm::write_disk(&req)?)
}

/// The `disk` object of `--json`.
pub fn json(d: &DiskReport) -> serde_json::Value {
    serde_json::json!({
        "file": d.output.display().to_string(),
        "file_size": d.file_size,
        "disk_size": d.disk_size,
        "disk_guid": d.disk_guid,
        "root_uuid": d.root_uuid,
        "root_size": d.root_size,
        "esp_uuid": d.esp_uuid,
        "kernel": d.kernel,
        "label": d.label,
        "image_version": d.image_version,
    })
}
