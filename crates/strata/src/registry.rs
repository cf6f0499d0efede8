//! Registry flags and the `push`, `pull`, `copy` and `login` commands.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use strata_registry::{BlobOutcome, Client, ClientOptions, Credentials, Platform, PushReport};
use strata_transport::{Transport, Written};

use crate::progress::Progress;

/// How to reach registries; shared by every command that talks to one.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryFlags {
    /// Verify TLS certificates (default: yes, except for loopback registries, which may also
    /// be plain HTTP, as Docker does). --tls-verify=false allows plain HTTP and unverified TLS.
    #[arg(long, value_name = "BOOL", global = true)]
    pub tls_verify: Option<bool>,
    /// Credentials for the registry, USER:PASS (else from `strata login`, docker's
    /// config.json or podman's auth.json).
    #[arg(long, value_name = "USER:PASS", global = true, hide_env_values = true)]
    pub creds: Option<String>,
    /// Read and store credentials in this file instead of the default ones.
    #[arg(long, value_name = "FILE", global = true, env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
}

impl RegistryFlags {
    /// A client configured from the flags.
    pub fn client(&self) -> Result<Client> {
        let creds = match &self.creds {
            Some(c) => Some(
                c.parse::<Credentials>()
                    .map_err(|e| anyhow::anyhow!("--creds: {e}"))?,
            ),
            None => None,
        };
        let opts = ClientOptions {
            tls_verify: self.tls_verify,
            creds,
            auth_file: self.authfile.clone(),
            ..ClientOptions::default()
        };
        Ok(Client::new(opts)?)
    }
}

/// `push`, `pull` and `copy` are one operation: read an image from one place, write it to
/// another.
pub fn copy(
    src: &Transport,
    dest: &Transport,
    flags: &RegistryFlags,
    store_root: &Path,
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
    let scratch = store_root.join("v1/tmp");
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
    Ok(CopyOutcome {
        reference: match dest {
            // Name the image as the destination now knows it.
            Transport::Registry(r) if r.tag.is_some() => r.to_string(),
            Transport::Registry(r) => r.with_tag(&opened.image.tag).to_string(),
            Transport::Oci(_, Some(tag)) => format!("{}:{tag}", opened.image.name),
            _ => opened.image.reference(),
        },
        digest: match &written {
            Written::Pushed(r) => r.manifest_digest.clone(),
            Written::Local => opened.image.manifest_digest.clone(),
        },
        pushed: match written {
            Written::Pushed(r) => Some(r),
            Written::Local => None,
        },
    })
}

/// What a copy did.
pub struct CopyOutcome {
    /// NAME:TAG of the image copied.
    pub reference: String,
    /// Manifest digest at the destination.
    pub digest: String,
    /// Per-blob outcomes when pushed.
    pub pushed: Option<PushReport>,
}

impl CopyOutcome {
    /// A JSON summary for `--json`.
    pub fn json(&self, dest: &Transport) -> serde_json::Value {
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

/// `strata login HOST`: checks the credentials with the registry, then stores them like
/// `docker login` does.
pub fn login(
    host: &str,
    username: Option<String>,
    password_stdin: bool,
    flags: &RegistryFlags,
) -> Result<()> {
    let creds = match (&flags.creds, username) {
        (Some(c), _) => c
            .parse::<Credentials>()
            .map_err(|e| anyhow::anyhow!("--creds: {e}"))?,
        (None, Some(user)) => {
            if !password_stdin {
                bail!(
                    "give the password on stdin with --password-stdin (it never goes on the command line)"
                );
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            Credentials::new(user, line.trim_end_matches(['\n', '\r']))
        }
        (None, None) => bail!("give --username USER --password-stdin, or --creds USER:PASS"),
    };
    let opts = ClientOptions {
        tls_verify: flags.tls_verify,
        creds: Some(creds.clone()),
        auth_file: flags.authfile.clone(),
        ..ClientOptions::default()
    };
    Client::new(opts)?
        .check_login(host)
        .with_context(|| format!("logging in to {host}"))?;
    let file = strata_registry::login(host, &creds, flags.authfile.as_deref())?;
    eprintln!("Login succeeded; credentials stored in {}", file.display());
    Ok(())
}
