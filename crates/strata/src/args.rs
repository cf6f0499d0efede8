//! The command line's argument types (clap), and the settings resolved from them. No command
//! logic lives here: each command is a file under `commands/`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use strata_registry::{Client, ClientOptions, Credentials};

/// Build reproducible, layered container images of developer workspaces, without a daemon.
///
/// A spec file (strata.toml) declares a workspace in two halves: [base], the shared environment
/// that rarely changes, and [user], the per-user additions. The image's name is the hash of the
/// base half and its tag the hash of the user half, so a configuration names its image, and the
/// same spec always gives the same bytes.
#[derive(Debug, Parser)]
#[command(name = "strata", version, propagate_version = true)]
pub struct Cli {
    /// The local store (layer cache and blobs). Default: $XDG_CACHE_HOME/strata.
    #[arg(long, global = true, env = "STRATA_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    #[command(flatten)]
    pub registry: RegistryFlags,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    ///   strata build vm.toml --output qcow2:ws.qcow2              # a spec with [boot]
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
    /// Serve images built on demand over the registry API (pull side), stored on a backend.
    ///
    /// A pull of HOST/debian/SUITE/PKG/PKG...:latest builds an image of those Debian packages
    /// (resolved against the archive when the request arrives) once, pushes it to the backend
    /// repository under a key derived from the resolved inputs, and serves it from there.
    /// spec/NAME:latest does the same for --specs DIR/NAME/strata.toml. Meta segments before
    /// the suite: shell, coder, an architecture (arm64). Write `+` as `_p` (g_p_p for g++).
    /// The server keeps no state of its own: replicas share the backend (see docs/serve.md).
    ///
    /// Examples:
    ///   strata serve --listen 127.0.0.1:8080 --backend docker://127.0.0.1:5000/strata-cache
    ///   podman pull --tls-verify=false 127.0.0.1:8080/debian/bookworm/jq:latest
    ///   strata serve --listen 0.0.0.0:8080 --backend docker://registry:5000/cache --tls-verify=false \
    ///       --peers http://serve-1:8080,http://serve-2:8080 --advertise http://serve-1:8080
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Check an image against a platform's requirements, without a container engine.
    ///
    /// --coder checks Coder's workspace-image minimums and prints a checklist; the exit
    /// status is non-zero when a required item fails.
    ///
    /// Examples:
    ///   strata check oci:strata-out/strata/0f3a... --coder
    ///   strata check docker://127.0.0.1:5000/team/ws:v1 --coder
    ///   strata check strata.toml --coder --json
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
    /// Coder workspaces: templates that run a spec's image.
    #[command(subcommand)]
    Coder(CoderCommand),
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
    Lock(LockArgs),
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
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The spec file.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Where to write the image: oci:DIR (OCI image layout), docker-archive:FILE, - (a
    /// docker-archive on stdout), or docker://HOST[:PORT]/REPO[:TAG] (push; without a tag, the
    /// image's own tag). For a spec with [boot]: raw:FILE or qcow2:FILE (a bootable UEFI disk)
    /// or iso:FILE (a live ISO). Default: oci:./strata-out/NAME.
    #[arg(long, short, value_name = "DEST")]
    pub output: Option<String>,
    /// Layer compression. Default: gzip, except for docker-archive: and - outputs, whose
    /// layers are stored uncompressed anyway, so they are built uncompressed (the archive's
    /// bytes are the same either way; only the store's blobs differ).
    #[arg(long, value_parser = ["gzip", "zstd", "none"])]
    pub compression: Option<String>,
    /// Most layers the image may have (the last one is kept for customisation).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_layers: usize,
    /// Worker threads. Default: one per core. The image bytes never depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Clamp every file time to this Unix time, which is also the image's creation time.
    #[arg(
        long,
        env = "SOURCE_DATE_EPOCH",
        default_value_t = 1,
        value_name = "SECONDS"
    )]
    pub source_date_epoch: i64,
    /// Print a JSON result object on stdout instead of the reference.
    #[arg(long)]
    pub json: bool,
    /// Write the image even when a spec with [coder] fails `strata check --coder`.
    #[arg(long)]
    pub no_check: bool,
    /// Fail unless the lock file exists and matches the spec (never resolve packages).
    #[arg(long)]
    pub locked: bool,
    /// Use no network: build from the lock file and the packages in the store, or name the
    /// packages that are missing.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// oci:DIR[:TAG] or docker-archive:FILE.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// oci:DIR[:TAG] or docker-archive:FILE.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// docker://HOST[:PORT]/REPO[:TAG]; without a tag, the image's own tag.
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// Print JSON (per-blob outcomes).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// docker://HOST[:PORT]/REPO[:TAG|@DIGEST].
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// oci:DIR[:TAG], docker-archive:FILE or -.
    #[arg(long, short, value_name = "DEST")]
    pub output: String,
    /// OS/ARCH[/VARIANT] to select from a multi-platform image. Default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// oci:DIR[:TAG], docker-archive:FILE or docker://REF.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// oci:DIR[:TAG], docker-archive:FILE, docker://REF or -.
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// OS/ARCH[/VARIANT] to select from a multi-platform image. Default: this machine's.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The registry, HOST[:PORT].
    #[arg(value_name = "HOST")]
    pub host: String,
    /// User name.
    #[arg(long, short)]
    pub username: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (HOST:PORT).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// The backend repository built images are pushed to and served from: docker://HOST/REPO.
    #[arg(long, value_name = "docker://HOST/REPO")]
    pub backend: String,
    /// Answer blob GETs with a 307 redirect to the backend registry instead of streaming them
    /// (clients must be able to reach the backend).
    #[arg(long)]
    pub redirect_blobs: bool,
    /// Directory of team specs: spec/NAME serves DIR/NAME/strata.toml.
    #[arg(long, value_name = "DIR")]
    pub specs: Option<PathBuf>,
    /// Seconds a pull waits for a build before a retryable error (429; the build goes on).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub build_wait: u64,
    /// Seconds a failed resolution or build is remembered (answered at once with its cause).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub failure_ttl: u64,
    /// Seconds a `latest` resolution is reused before the archive is read again.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub resolve_ttl: u64,
    /// Builds at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_builds: usize,
    /// Worker threads per build (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The replicas, comma-separated base URLs (this one included): each new image is built
    /// by its owner among them (rendezvous hashing), or the next one when the owner is down.
    #[arg(long, value_name = "URL,URL...", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// This replica's URL as --peers spells it.
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A spec file (built first), oci:DIR[:TAG], docker-archive:FILE or docker://REF.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The command and its arguments, after `--`. Default: the image's entrypoint and cmd,
    /// else /bin/sh.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
    /// Run as USER[:GROUP] (names from the image's /etc/passwd and /etc/group, or numbers).
    #[arg(long, short, value_name = "USER")]
    pub user: Option<String>,
    /// Working directory inside the image.
    #[arg(long, short, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass strata's own); repeatable.
    #[arg(long, short, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Bind-mount a host path: SRC:DST, or SRC:DST:ro for read-only; repeatable.
    #[arg(long, value_name = "SRC:DST[:ro]")]
    pub mount: Vec<String>,
    /// Share the host's network (default: none, only a loopback interface).
    #[arg(long)]
    pub network: bool,
    /// Keep standard input open and pass it to the command (without -i, the command's
    /// standard input is /dev/null, as with `docker run`).
    #[arg(long, short)]
    pub interactive: bool,
    /// Give the command a terminal (use with -i: `strata run -it IMAGE`).
    #[arg(long, short)]
    pub tty: bool,
}

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
    /// With --image docker://HOST/REPO:TAG, the template pins the digest the registry holds
    /// for that tag, so workspaces pull exactly the image pushed there. Without it, the spec is
    /// built (unchanged layers come from the store) and its own NAME:TAG@DIGEST is pinned. The
    /// container runs as the spec's account with the agent's init script, and its home
    /// directory is a persistent volume.
    ///
    /// Examples:
    ///   strata build strata.toml --output docker://registry.example/ws:v1
    ///   strata coder template strata.toml --kind docker --image docker://registry.example/ws:v1
    ///   strata coder template strata.toml --kind kubernetes
    ///   strata coder template vm.toml --kind proxmox   # a VM cloned from the qcow2's VM template
    ///
    /// --kind proxmox needs [boot] with cloud_init = true: the VM is cloned from a Proxmox VM
    /// template of `strata build vm.toml --output qcow2:FILE`, and cloud-init user-data sets
    /// its host name, creates the account with passwordless sudo and starts the agent as it.
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
    #[arg(long, value_parser = ["docker", "kubernetes", "proxmox"])]
    pub kind: String,
    /// Where the workspace pulls the image from: docker://HOST[:PORT]/REPO[:TAG] (push it there
    /// first, e.g. with `strata build --output docker://…`). The template pins the digest the
    /// registry holds for that tag. Without it, the spec's own NAME:TAG is pinned, which only
    /// an engine that already has the image can run.
    #[arg(long, value_name = "docker://REF")]
    pub image: Option<String>,
    /// The directory to write (created if missing). Default: ./coder-template-KIND.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Arguments of `strata lock`.
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The spec file.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
}

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
