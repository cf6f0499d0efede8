//! `strata check --coder` and `strata coder template`: Coder workspaces.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use strata_build::{BuildOptions, BuildOutcome, NoReporter};
use strata_coder::template::{TemplateInput, TemplateKind, generate};
use strata_coder::{CheckReport, ImageFiles, check_coder};
use strata_registry::Platform;
use strata_spec::Spec;
use strata_store::Store;
use strata_transport::Transport;

use crate::registry::RegistryFlags;

/// Arguments of `strata check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The image: oci:DIR[:TAG], docker-archive:FILE, docker://HOST/REPO[:TAG|@DIGEST]
    /// (pulled into a temporary directory, for the host's platform), or a spec file (built
    /// first).
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Check Coder's workspace-image minimums (the only check so far).
    #[arg(long)]
    pub coder: bool,
    /// Print the checklist as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `strata coder ...` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CoderCommand {
    /// Write a Coder template (main.tf and README.md) that runs a spec's image by digest.
    ///
    /// The spec is built first (unchanged layers come from the store), so the template pins the
    /// image's exact digest. The container runs as the spec's account with the agent's init
    /// script, and its home directory is a persistent volume.
    ///
    /// Examples:
    ///   strata coder template strata.toml --kind docker --out coder-template
    ///   strata coder template strata.toml --kind kubernetes
    #[command(verbatim_doc_comment)]
    Template(TemplateArgs),
}

/// Arguments of `strata coder template`.
#[derive(Debug, clap::Args)]
pub struct TemplateArgs {
    /// The spec file; it must have a [coder] or [account] table.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Which of Coder's example templates to follow.
    #[arg(long, value_parser = ["docker", "kubernetes"])]
    pub kind: String,
    /// The directory to write (created if missing). Default: ./coder-template-KIND.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs a `strata coder` subcommand.
pub fn run(store_root: &Path, cmd: CoderCommand) -> Result<()> {
    match cmd {
        CoderCommand::Template(args) => template(store_root, args),
    }
}

fn build_spec(store_root: &Path, spec_path: &Path) -> Result<(Spec, BuildOutcome)> {
    let spec = Spec::load(spec_path)?;
    let store = Store::open(store_root)?;
    let outcome = strata_build::build(&spec, &store, &BuildOptions::default(), &NoReporter)
        .with_context(|| format!("building {}", spec_path.display()))?;
    Ok((spec, outcome))
}

fn open_image(store_root: &Path, image: &str, flags: &RegistryFlags) -> Result<ImageFiles> {
    if let Some(rest) = image.strip_prefix("oci:") {
        // oci:DIR:TAG, as skopeo writes it; a colon inside DIR is not supported.
        let (dir, tag) = match rest.split_once(':') {
            Some((dir, tag)) if !tag.is_empty() && !tag.contains('/') => (dir, Some(tag)),
            _ => (rest, None),
        };
        if dir.is_empty() {
            bail!("`{image}`: oci: needs a directory, as in oci:./out");
        }
        return strata_coder::open_oci_layout(Path::new(dir), tag)
            .with_context(|| format!("reading {image}"));
    }
    if let Some(file) = image.strip_prefix("docker-archive:") {
        return strata_coder::open_docker_archive(Path::new(file))
            .with_context(|| format!("reading {image}"));
    }
    if image.starts_with("docker://") {
        // Pulled (every blob verified) into a temporary directory that goes when the files are
        // indexed.
        let source = Transport::parse(image)?;
        let client = flags.client()?;
        let opened = strata_transport::open(
            &source,
            Some(&client),
            &Platform::host(),
            &store_root.join("v1/tmp"),
        )
        .with_context(|| format!("pulling {image}"))?;
        return strata_coder::open_built(&opened.image).with_context(|| format!("reading {image}"));
    }
    let path = Path::new(image);
    if path.is_file() {
        let (_, outcome) = build_spec(store_root, path)?;
        return strata_coder::open_built(&outcome.image)
            .with_context(|| format!("reading the image built from {image}"));
    }
    bail!(
        "`{image}` is not an image: use oci:DIR[:TAG], docker-archive:FILE, docker://HOST/REPO[:TAG] or a spec file"
    )
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
pub fn check(store_root: &Path, args: CheckArgs, flags: &RegistryFlags) -> Result<()> {
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

fn template(store_root: &Path, args: TemplateArgs) -> Result<()> {
    let kind: TemplateKind = args.kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let (spec, outcome) = build_spec(store_root, &args.spec)?;
    let Some(account) = spec.account() else {
        bail!(
            "{}: the spec has no [coder] or [account] table; add [coder] so the image gets a workspace account",
            args.spec.display()
        );
    };
    let image = format!(
        "{}@{}",
        outcome.image.reference(),
        outcome.image.manifest_digest
    );
    let title = spec
        .image
        .annotations
        .get("org.opencontainers.image.title")
        .cloned()
        .unwrap_or_else(|| spec.image.name.clone());
    let input = TemplateInput {
        image,
        architecture: spec.image.architecture.clone(),
        account,
        code_server: spec
            .coder
            .as_ref()
            .and_then(|c| c.code_server)
            .unwrap_or(false),
        startup_script: spec.coder.as_ref().and_then(|c| c.startup_script.clone()),
        title,
    };
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("coder-template-{}", kind.as_str())));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, text) in generate(kind, &input).files {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", out.display());
    Ok(())
}
