//! `strata check IMAGE --coder`, and the same check as `strata build`'s gate.

use std::path::Path;

use anyhow::{Context, Result, bail};
use strata_build::{BuildOptions, BuildOutcome, NoReporter};
use strata_coder::{CheckReport, ImageFiles, check_coder};
use strata_registry::Platform;
use strata_spec::Spec;
use strata_store::Store;
use strata_transport::{Target, Transport};

use crate::args::{CheckArgs, RegistryFlags};

/// Builds a spec (unchanged layers come from the store).
pub fn build_spec(store_root: &Path, spec_path: &Path) -> Result<(Spec, BuildOutcome)> {
    let spec = Spec::load(spec_path)?;
    let store = Store::open(store_root)?;
    let outcome = strata_build::build(&spec, &store, &BuildOptions::default(), &NoReporter)
        .with_context(|| format!("building {}", spec_path.display()))?;
    Ok((spec, outcome))
}

fn open_image(store_root: &Path, image: &str, flags: &RegistryFlags) -> Result<ImageFiles> {
    match Target::parse(image)? {
        Target::Image(Transport::Oci(dir, tag)) => {
            strata_coder::open_oci_layout(&dir, tag.as_deref())
                .with_context(|| format!("reading {image}"))
        }
        Target::Image(Transport::DockerArchive(file)) => {
            strata_coder::open_docker_archive(&file).with_context(|| format!("reading {image}"))
        }
        Target::Image(source @ Transport::Registry(_)) => {
            // Pulled (every blob verified) into a temporary directory of the store's scratch,
            // removed once the files are indexed.
            let store = Store::open(store_root)?;
            let client = flags.client()?;
            let opened = strata_transport::open(
                &source,
                Some(&client),
                &Platform::host(),
                &store.scratch_dir(),
            )
            .with_context(|| format!("pulling {image}"))?;
            strata_coder::open_built(&opened.image).with_context(|| format!("reading {image}"))
        }
        Target::Image(Transport::Stdout | Transport::Disk(..)) => {
            bail!(
                "`{image}` is an output; check oci:DIR[:TAG], docker-archive:FILE, docker://REF or a spec file"
            )
        }
        Target::Spec(path) if path.is_file() => {
            let (_, outcome) = build_spec(store_root, &path)?;
            strata_coder::open_built(&outcome.image)
                .with_context(|| format!("reading the image built from {image}"))
        }
        Target::Spec(_) => bail!(
            "`{image}` is not an image: use oci:DIR[:TAG], docker-archive:FILE, docker://HOST/REPO[:TAG] or a spec file"
        ),
    }
}

fn print_report(report: &CheckReport, json: bool, what: &str) -> Result<()> {
    if json {
        let value = serde_json::json!({
            "image": what,
            "passed": report.passed(),
            "items": report.items,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("Coder workspace check of {what}");
        print!("{}", report.render());
    }
    Ok(())
}

/// `strata check IMAGE --coder`: prints the checklist; fails when a required item fails.
pub fn run(store_root: &Path, args: CheckArgs, flags: &RegistryFlags) -> Result<()> {
    if !args.coder {
        bail!("say what to check: --coder checks Coder's workspace-image minimums");
    }
    let image = open_image(store_root, &args.image, flags)?;
    let report = check_coder(&image);
    print_report(&report, args.json, &args.image)?;
    fail_unless_passed(&report)
}

fn fail_unless_passed(report: &CheckReport) -> Result<()> {
    let failed: Vec<&str> = report.failures().map(|i| i.id).collect();
    if !failed.is_empty() {
        bail!(
            "the image fails Coder's workspace requirements: {}",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The check `strata build` runs for a spec with `[coder]`, before the image is written. The
/// checklist goes to stderr; a failing image is refused.
pub fn gate(outcome: &BuildOutcome) -> Result<()> {
    let image = strata_coder::open_built(&outcome.image).context("checking the built image")?;
    let report = check_coder(&image);
    if !report.passed() {
        eprint!("{}", report.render());
        return fail_unless_passed(&report)
            .context("not writing the image (the spec has [coder]; --no-check skips this)");
    }
    Ok(())
}
