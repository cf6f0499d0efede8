//! `strata coder template SPEC --kind docker|kubernetes [--image docker://REF]`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use strata_coder::template::{TemplateInput, TemplateKind, generate};
use strata_spec::Spec;
use strata_transport::Transport;

use super::check::build_spec;
use crate::args::{RegistryFlags, TemplateArgs};

/// Writes the template files and prints the directory.
pub fn run(store_root: &Path, args: TemplateArgs, flags: &RegistryFlags) -> Result<()> {
    let kind: TemplateKind = args.kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let (spec, image) = match &args.image {
        Some(location) => {
            let spec = Spec::load(&args.spec)?;
            (spec, pushed_image(location, flags)?)
        }
        None => {
            let (spec, outcome) = build_spec(store_root, &args.spec)?;
            eprintln!(
                "strata: the template pins {}, which exists only where it was built; push it \
                 and pass --image docker://HOST/REPO:TAG so workspaces can pull it",
                outcome.image.reference()
            );
            let image = format!(
                "{}@{}",
                outcome.image.reference(),
                outcome.image.manifest_digest
            );
            (spec, image)
        }
    };
    let Some(account) = spec.account() else {
        bail!(
            "{}: the spec has no [coder] or [account] table; add [coder] so the image gets a workspace account",
            args.spec.display()
        );
    };
    if kind == TemplateKind::Proxmox && !spec.boot.as_ref().is_some_and(|b| b.cloud_init) {
        bail!(
            "{}: --kind proxmox makes VMs from the spec's disk image, set up by cloud-init; add \
             [boot] with `cloud_init = true`",
            args.spec.display()
        );
    }
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

/// `HOST/REPO:TAG@DIGEST` of the image `location` (docker://HOST/REPO[:TAG|@DIGEST]) names,
/// with the digest the registry holds for the tag.
fn pushed_image(location: &str, flags: &RegistryFlags) -> Result<String> {
    let Transport::Registry(reference) = Transport::parse(location)? else {
        bail!(
            "--image `{location}`: give the registry the workspace pulls from, as docker://HOST/REPO:TAG"
        );
    };
    let client = flags.client()?;
    let digest = client
        .manifest_digest(&reference)
        .with_context(|| format!("asking docker://{reference} for its digest"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--image docker://{reference}: the registry has no such image; push it first (strata build SPEC --output docker://{reference})"
            )
        })?;
    let digest = strata_oci::Digest::parse(&digest)
        .with_context(|| format!("the digest docker://{reference} reported"))?;
    if let Some(pinned) = &reference.digest
        && *pinned != digest.as_str()
    {
        bail!("--image docker://{reference}: the registry serves {digest} for it");
    }
    let mut pinned = reference.clone();
    pinned.digest = Some(digest.to_string());
    Ok(pinned.to_string())
}
