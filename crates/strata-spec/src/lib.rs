//! The `strata.toml` image specification.
//!
//! A spec declares one workspace image in two halves: [`Part::Base`], the rarely changing shared
//! environment, and [`Part::User`], the per-user additions, plus image metadata (`[image]`) and
//! the runtime configuration (`[config]`). [`Spec::load`] reads and validates a spec, reporting
//! every problem with its file, line, column and key path. [`Spec::canonical`] and
//! [`Spec::canonical_image`] give canonical JSON forms that the builder hashes into the image
//! reference; they ignore formatting, comments, key order and explicitly written defaults.
//!
//! The full reference of the format is `docs/spec.md` at the root of the repository.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

mod check;

/// Whether a suite is an Ubuntu release or one of its pockets (`jammy`, `noble-updates`).
pub fn is_ubuntu_suite(suite: &str) -> bool {
    check::is_ubuntu_suite(suite)
}
mod error;
mod json;
mod parse;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use strata_fstree::{Dest, ImagePath};

pub use check::repository_component;
pub use error::{Diagnostic, Location, Problem, SpecError};
use json::Json;

/// The repository name prefix used when `image.name` is absent.
pub const DEFAULT_NAME: &str = "strata";
/// The Debian suite used when `debian.suite` is absent (and not inherited).
pub const DEFAULT_DEBIAN_SUITE: &str = "bookworm";
/// The Debian mirror used when `debian.mirror` is absent (and not inherited).
pub const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// The Debian security mirror used when `debian.security_mirror` is absent (and not inherited).
pub const DEFAULT_DEBIAN_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
/// The Ubuntu archive used for an Ubuntu suite (`jammy`, `noble`) on amd64 and i386.
pub const UBUNTU_MIRROR: &str = "http://archive.ubuntu.com/ubuntu";
/// The Ubuntu security archive used for an Ubuntu suite on amd64 and i386.
pub const UBUNTU_SECURITY_MIRROR: &str = "http://security.ubuntu.com/ubuntu";
/// The Ubuntu archive (and security archive) for the other architectures (arm64, ...).
pub const UBUNTU_PORTS_MIRROR: &str = "http://ports.ubuntu.com/ubuntu-ports";
/// The Debian archive components used when `debian.components` is absent (and not inherited).
pub const DEFAULT_DEBIAN_COMPONENTS: &[&str] = &["main"];
/// The image path of the Nix profile used when `nix.profile` is absent: where NixOS keeps the
/// system profile, so the image looks like the Nix base image.
pub const DEFAULT_NIX_PROFILE: &str = "/run/current-system/sw";

/// Version of the canonical forms; bumped whenever their layout changes, so that old hashes are
/// never reused for a different meaning.
const CANONICAL_FORMAT: u64 = 1;

/// The OCI architecture of the machine running this code (`amd64` for `x86_64`, `arm64` for
/// `aarch64`, ...), used when `image.architecture` is absent. Falls back to Rust's own name for
/// architectures OCI has no name for.
pub fn host_architecture() -> &'static str {
    check::oci_arch(std::env::consts::ARCH).unwrap_or(std::env::consts::ARCH)
}

/// The SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One of the two halves of a workspace image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// The shared environment (`[base]`): changes rarely, names the image repository.
    Base,
    /// The per-user additions (`[user]`): layered on top of the base, names the tag.
    User,
}

impl Part {
    /// The table name of this half in `strata.toml`: `base` or `user`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Base => "base",
            Part::User => "user",
        }
    }
}

/// A validated `strata.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The spec file, as it was named when loading.
    pub path: PathBuf,
    /// The directory holding the spec file (`.` for a bare file name); relative `src` and
    /// `keyring` paths are resolved against it.
    pub dir: PathBuf,
    /// `[image]`: name and metadata.
    pub image: ImageSection,
    /// `[base]`: the shared environment.
    pub base: Half,
    /// `[user]`: the per-user additions.
    pub user: Half,
    /// `[config]`: how containers of the image run.
    pub config: ConfigSection,
    /// `[account]`: the workspace account, as written. See [`Spec::account`] for the
    /// effective account.
    pub account: Option<AccountSection>,
    /// `[coder]`: the image is a Coder workspace (implies an account with the defaults).
    pub coder: Option<CoderSection>,
    /// `[services]`: systemd units to enable or disable.
    pub services: Option<ServicesSection>,
    /// `[boot]`: the image is also a bootable machine (disk outputs `raw:`, `qcow2:`).
    pub boot: Option<BootSection>,
}

/// The kernel package `[boot]` installs when `kernel` is not written: Debian's cloud kernel
/// (ext4, virtio and NVMe built in; 27 MB instead of the generic kernel's 71 MB).
pub fn default_kernel(architecture: &str) -> String {
    match architecture {
        "arm64" => "linux-image-cloud-arm64".to_owned(),
        _ => "linux-image-cloud-amd64".to_owned(),
    }
}

/// `[boot]`: how the image boots as a virtual machine, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSection {
    /// The kernel package (default [`default_kernel`]).
    pub kernel: String,
    /// The init system: `systemd` (the only one supported).
    pub init: String,
    /// Kernel command line additions, after strata's own (`root=`, `console=`).
    pub cmdline: Vec<String>,
    /// Size of the root file system in bytes, when fixed; else content plus `free_space`.
    pub root_size: Option<u64>,
    /// Free space left in the root file system, in bytes (default 256 MiB).
    pub free_space: u64,
    /// `/etc/hostname` (default: the last component of `[image] name`).
    pub hostname: Option<String>,
    /// Install and configure cloud-init (NoCloud and ConfigDrive data sources).
    pub cloud_init: bool,
    /// Volume ID of the disk's file systems (default: `[image] name`'s last component, upper
    /// case): the ESP's FAT label (11 characters) and an ISO's volume ID.
    pub volume_id: Option<String>,
    /// The boot menu's entry title (default: `NAME VERSION`).
    pub label: Option<String>,
    /// An `iso:` output is an installer: it carries the raw disk and, on boot, writes it to
    /// the first suitable empty disk, then powers off.
    pub installer: bool,
    /// Where the section is written.
    pub location: Location,
    /// `boot`.
    pub key: String,
}

/// The packages `[boot]` adds to `[base].debian`: the kernel, systemd as init, udev (to find
/// the root file system by UUID), initramfs-tools (the kernel's hooks make the initramfs in
/// the configure step), kmod, systemd-boot's EFI binaries, live-boot (for `iso:` outputs),
/// and cloud-init when asked.
impl BootSection {
    /// The Debian packages a bootable image needs.
    pub fn packages(&self) -> Vec<String> {
        let mut p: Vec<String> = [
            self.kernel.as_str(),
            "systemd-sysv",
            "udev",
            "initramfs-tools",
            "kmod",
            "systemd-boot-efi",
            // The initramfs of a live ISO mounts its squashfs root under a memory overlay
            // (only with `boot=live` on the kernel command line).
            "live-boot",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if self.cloud_init {
            p.push("cloud-init".to_owned());
        }
        p
    }
}

/// `[image]`, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSection {
    /// The repository name prefix, e.g. `strata` or `ghcr.io/acme/ws`.
    pub name: String,
    /// The OCI architecture, e.g. `amd64`.
    pub architecture: String,
    /// OCI annotations by full key, e.g. `org.opencontainers.image.title`.
    pub annotations: BTreeMap<String, String>,
}

/// The content of one half (`[base]` or `[user]`), one field per content source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Half {
    /// Host files and directories copied into the image, in the order written (later entries
    /// win where they overlap).
    pub tree: Vec<TreeEntry>,
    /// Debian packages, if the half uses the Debian source.
    pub debian: Option<DebianSection>,
    /// Nix installables and store paths, if the half uses the Nix source.
    pub nix: Option<NixSection>,
    /// Symbolic links to make (`links = { "/usr/bin/bat" = "batcat" }`): the link's path in
    /// the image and its target, sorted by path.
    pub links: Vec<(ImagePath, String)>,
    /// Downloads from pinned URLs, in the order written (later entries win where they
    /// overlap).
    pub fetch: Vec<FetchEntry>,
    /// Python packages from PyPI (or another index), if the half uses the Python source.
    pub python: Option<PythonSection>,
}

/// The image path of the virtual environment used when `python.venv` is absent.
pub const DEFAULT_PYTHON_VENV: &str = "/opt/venv";

/// `python = { ... }`: Python distributions installed into a virtual environment of the
/// image's own Python.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonSection {
    /// Requirements as pip takes them (`rich`, `requests>=2.31`, `ansible==9.1.0`), in the
    /// order written.
    pub packages: Vec<String>,
    /// The image path of the virtual environment; `None` means [`DEFAULT_PYTHON_VENV`].
    pub venv: Option<ImagePath>,
    /// The package index (a PEP 503 simple index URL); `None` means PyPI.
    pub index_url: Option<String>,
    /// Where the section is written in the spec file.
    pub location: Location,
    /// The key path of the section, e.g. `user.python`.
    pub key: String,
}

impl PythonSection {
    /// The virtual environment's path, with the default applied.
    pub fn effective_venv(&self) -> ImagePath {
        self.venv.clone().unwrap_or_else(|| {
            ImagePath::new(DEFAULT_PYTHON_VENV).expect("DEFAULT_PYTHON_VENV is a valid image path")
        })
    }
}

/// One `fetch` entry: a file downloaded from a URL, verified by its SHA-256, placed at a path
/// in the image as it is or unpacked from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchEntry {
    /// The `http://` or `https://` URL (it may hold credentials, which are never shown).
    pub url: String,
    /// SHA-256 of the downloaded bytes, 64 lowercase hex digits; `None` means the lock file
    /// pins it (`strata lock` fills it in).
    pub sha256: Option<String>,
    /// Where the file goes, or the directory an archive is unpacked into.
    pub dest: ImagePath,
    /// Permission bits of the file (default `0o644`), or of `dest` when unpacking.
    pub mode: Option<u32>,
    /// Owner of every entry; `None` means root (0).
    pub uid: Option<u32>,
    /// Group of every entry; `None` means root (0).
    pub gid: Option<u32>,
    /// The archive format to unpack (`tar.gz`, `tar.xz`, `tar.zst`, `tar.bz2`, `tar`, `zip`);
    /// `None` places the file as it is.
    pub unpack: Option<String>,
    /// Leading path components dropped from every archive entry (only with `unpack`).
    pub strip_components: Option<u32>,
    /// Where this entry is written in the spec file.
    pub location: Location,
    /// The key path of this entry, e.g. `base.fetch[0]`.
    pub key: String,
}

/// One `tree` entry: a host file or directory copied to a path in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// The host path as written, relative to [`Spec::dir`] (see [`Spec::source_path`]).
    pub src: PathBuf,
    /// Where the file or directory lands in the image; [`Dest::Root`] (`dest = "/"`) copies
    /// a directory's contents to the top of the image.
    pub dest: Dest,
    /// Permission bits (at most `0o7777`) for the copied entries; `None` keeps the host's.
    pub mode: Option<u32>,
    /// Owner of the copied entries; `None` means root (0).
    pub uid: Option<u32>,
    /// Group of the copied entries; `None` means root (0).
    pub gid: Option<u32>,
    /// Where this entry is written in the spec file.
    pub location: Location,
    /// The key path of this entry, e.g. `base.tree[2]`.
    pub key: String,
}

/// `debian = { ... }` as written: absent settings are `None`. Use [`Spec::debian_settings`] or
/// [`DebianSection::effective`] for the settings with inheritance and defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianSection {
    /// Package names, as written.
    pub packages: Vec<String>,
    /// Suite or codename, e.g. `bookworm`.
    pub suite: Option<String>,
    /// Archive mirror URL, without trailing slash.
    pub mirror: Option<String>,
    /// Security archive mirror URL, without trailing slash.
    pub security_mirror: Option<String>,
    /// Whether to use the `-updates` and security suites too.
    pub updates: Option<bool>,
    /// Archive components, e.g. `main`.
    pub components: Option<Vec<String>>,
    /// Keyring to verify the archive with, relative to [`Spec::dir`], lexically normalised.
    pub keyring: Option<PathBuf>,
    /// Whether to install recommended packages.
    pub recommends: Option<bool>,
    /// Whether to install the `Essential: yes` packages.
    pub essential: Option<bool>,
    /// Whether to run the packages' maintainer scripts (configure them).
    pub configure: Option<bool>,
    /// Further repositories (`[[base.debian.repos]]`), in the order written.
    pub repos: Vec<DebianRepo>,
    /// Debconf answers (`debconf-set-selections` lines: `OWNER QUESTION TYPE VALUE`), seeded
    /// before the packages are configured, in the order written.
    pub debconf: Vec<String>,
    /// Where the section is written in the spec file.
    pub location: Location,
    /// The key path of the section, e.g. `base.debian`.
    pub key: String,
}

/// `[services]`: systemd units enabled (the links `systemctl enable` makes, from the units'
/// `[Install]` sections) or disabled (their links removed after the configure step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicesSection {
    /// Units to enable, as written (`docker` means `docker.service`).
    pub enable: Vec<String>,
    /// Units to disable, as written.
    pub disable: Vec<String>,
    /// Where the section is written.
    pub location: Location,
    /// `services`.
    pub key: String,
}

/// One further apt repository of a `debian` section (`[[base.debian.repos]]`): a vendor
/// archive or a PPA, signed by its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianRepo {
    /// Short name, unique in the spec (`docker`; for a PPA `ppa-OWNER-NAME` by default).
    pub name: String,
    /// Base URI, without trailing slash (a PPA's Launchpad URI for `ppa =`).
    pub uri: String,
    /// Suites or codenames; `None` means the section's own suite.
    pub suites: Option<Vec<String>>,
    /// Components (`main` when not written).
    pub components: Vec<String>,
    /// Keyring (armored or binary OpenPGP) relative to [`Spec::dir`], lexically normalised.
    pub keyring: PathBuf,
    /// apt pin priority (500 when not written).
    pub priority: i32,
    /// dpkg architectures it serves; empty means every architecture.
    pub architectures: Vec<String>,
    /// Where the repository is written.
    pub location: Location,
    /// Its key path, e.g. `base.debian.repos[0]`.
    pub key: String,
}

/// The Debian settings of one half with inheritance and defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianSettings {
    /// Package names, sorted, without duplicates.
    pub packages: Vec<String>,
    /// Suite or codename.
    pub suite: String,
    /// Archive mirror URL.
    pub mirror: String,
    /// Security archive mirror URL.
    pub security_mirror: String,
    /// Whether to use the `-updates` and security suites too.
    pub updates: bool,
    /// Archive components, sorted, without duplicates.
    pub components: Vec<String>,
    /// Keyring relative to [`Spec::dir`]; `None` means the source's built-in Debian keyring.
    pub keyring: Option<PathBuf>,
    /// Whether to install recommended packages.
    pub recommends: bool,
    /// Whether to install the `Essential: yes` packages.
    pub essential: bool,
    /// Whether to run the packages' maintainer scripts.
    pub configure: bool,
    /// Further repositories: `[base]`'s, then (for `[user]`) the half's own; a repository
    /// without `suites` has the half's suite.
    pub repos: Vec<DebianRepo>,
    /// The half's own debconf answers (not inherited: both halves' are seeded together).
    pub debconf: Vec<String>,
}

impl DebianSection {
    /// The effective settings of this section. Repository settings (`suite`, `mirror`,
    /// `security_mirror`, `updates`, `components`, `keyring`) that this section omits are taken
    /// from `inherit` (the `[base].debian` section, for `[user].debian`), then from the
    /// defaults; install options (`recommends`, `essential`, `configure`) are never inherited.
    pub fn effective(&self, inherit: Option<&DebianSection>) -> DebianSettings {
        fn pick<T: Clone>(
            own: &Option<T>,
            inherit: Option<&DebianSection>,
            get: impl Fn(&DebianSection) -> &Option<T>,
        ) -> Option<T> {
            own.clone().or_else(|| inherit.and_then(|b| get(b).clone()))
        }
        let mut packages = self.packages.clone();
        packages.sort();
        packages.dedup();
        let mut components =
            pick(&self.components, inherit, |d| &d.components).unwrap_or_else(|| {
                DEFAULT_DEBIAN_COMPONENTS
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect()
            });
        components.sort();
        components.dedup();
        let mut settings = DebianSettings {
            packages,
            suite: pick(&self.suite, inherit, |d| &d.suite)
                .unwrap_or_else(|| DEFAULT_DEBIAN_SUITE.to_owned()),
            mirror: pick(&self.mirror, inherit, |d| &d.mirror)
                .unwrap_or_else(|| DEFAULT_DEBIAN_MIRROR.to_owned()),
            security_mirror: pick(&self.security_mirror, inherit, |d| &d.security_mirror)
                .unwrap_or_else(|| DEFAULT_DEBIAN_SECURITY_MIRROR.to_owned()),
            updates: pick(&self.updates, inherit, |d| &d.updates).unwrap_or(true),
            components,
            keyring: pick(&self.keyring, inherit, |d| &d.keyring),
            recommends: self.recommends.unwrap_or(false),
            essential: self.essential.unwrap_or(true),
            configure: self.configure.unwrap_or(true),
            repos: Vec::new(),
            debconf: self.debconf.clone(),
        };
        let suite = settings.suite.clone();
        settings.repos = inherit
            .map(|b| b.repos.as_slice())
            .unwrap_or_default()
            .iter()
            .chain(&self.repos)
            .map(|r| DebianRepo {
                suites: Some(r.suites.clone().unwrap_or_else(|| vec![suite.clone()])),
                ..r.clone()
            })
            .collect();
        settings
    }
}

/// `nix = { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixSection {
    /// Installables as the `nix` command takes them (`.#hello`, `nixpkgs#git`, `./default.nix`),
    /// in the order written.
    pub installables: Vec<String>,
    /// Store paths (`/nix/store/<hash>-<name>`), in the order written.
    pub paths: Vec<String>,
    /// The image path of the profile link; `None` means [`DEFAULT_NIX_PROFILE`].
    pub profile: Option<ImagePath>,
    /// Whether the closure is registered in the image's Nix database (`/nix/var/nix/db`), so
    /// the nix inside the image can use the store.
    pub database: bool,
    /// Where the section is written in the spec file.
    pub location: Location,
    /// The key path of the section, e.g. `user.nix`.
    pub key: String,
}

impl NixSection {
    /// The profile link path, with the default applied.
    pub fn effective_profile(&self) -> ImagePath {
        self.profile.clone().unwrap_or_else(default_nix_profile)
    }
}

fn default_nix_profile() -> ImagePath {
    ImagePath::new(DEFAULT_NIX_PROFILE).expect("DEFAULT_NIX_PROFILE is a valid image path")
}

/// `[config]`: the OCI runtime configuration of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSection {
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The entrypoint, if set.
    pub entrypoint: Option<Vec<String>>,
    /// The default command (arguments to the entrypoint), if set.
    pub cmd: Option<Vec<String>>,
    /// The working directory, absolute and normalised.
    pub workdir: Option<String>,
    /// The user (`name`, `uid`, `name:group` or `uid:gid`).
    pub user: Option<String>,
    /// Image config labels.
    pub labels: BTreeMap<String, String>,
    /// Exposed ports, normalised to `PORT/PROTO` (`8080/tcp`).
    pub exposed_ports: BTreeSet<String>,
}

/// The account name used when `account.name` is absent.
pub const DEFAULT_ACCOUNT_NAME: &str = "coder";
/// The user and group id used when `account.uid` / `account.gid` are absent.
pub const DEFAULT_ACCOUNT_ID: u32 = 1000;

/// `[account]` as written: absent keys are `None`. Use [`Spec::account`] for the effective
/// account with the defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSection {
    /// Login name.
    pub name: Option<String>,
    /// User id (never 0).
    pub uid: Option<u32>,
    /// Primary group id.
    pub gid: Option<u32>,
    /// Home directory, absolute and normalised.
    pub home: Option<String>,
    /// Login shell, absolute and normalised.
    pub shell: Option<String>,
    /// Passwordless sudo; `None` means "when sudo is in the image".
    pub sudo: Option<bool>,
    /// Supplementary groups, in the order written.
    pub groups: Vec<String>,
    /// The comment (GECOS) field.
    pub gecos: Option<String>,
    /// Where the section is written in the spec file.
    pub location: Location,
    /// The key path of the section: `account`.
    pub key: String,
}

/// `[coder]`: marks the image as a Coder workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoderSection {
    /// Whether generated templates offer a code-server app (default `false`; code-server must
    /// be in the image).
    pub code_server: Option<bool>,
    /// Extra shell commands for the agent's startup script in generated templates.
    pub startup_script: Option<String>,
    /// Where the section is written in the spec file.
    pub location: Location,
    /// The key path of the section: `coder`.
    pub key: String,
}

/// The workspace account with defaults applied; what the builder writes into `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name (default `coder`).
    pub name: String,
    /// User id (default 1000).
    pub uid: u32,
    /// Primary group id (default 1000); the group is named like the account.
    pub gid: u32,
    /// Home directory (default `/home/<name>`).
    pub home: String,
    /// Login shell; `None` means `/bin/bash` when bash is in the image, else `/bin/sh`.
    pub shell: Option<String>,
    /// Passwordless sudo; `None` means "when sudo is in the image".
    pub sudo: Option<bool>,
    /// Supplementary groups, sorted, without duplicates.
    pub groups: Vec<String>,
    /// The comment (GECOS) field (default empty).
    pub gecos: String,
}

impl Spec {
    /// The effective workspace account: `[account]` with its defaults, or the default account
    /// when only `[coder]` is present; `None` when the spec has neither.
    pub fn account(&self) -> Option<Account> {
        let a = match (&self.account, &self.coder) {
            (Some(a), _) => a.clone(),
            (None, Some(c)) => AccountSection {
                name: None,
                uid: None,
                gid: None,
                home: None,
                shell: None,
                sudo: None,
                groups: Vec::new(),
                gecos: None,
                location: c.location.clone(),
                key: "account".to_owned(),
            },
            (None, None) => return None,
        };
        let name = a.name.unwrap_or_else(|| DEFAULT_ACCOUNT_NAME.to_owned());
        let mut groups = a.groups;
        groups.sort();
        groups.dedup();
        Some(Account {
            home: a.home.unwrap_or_else(|| format!("/home/{name}")),
            uid: a.uid.unwrap_or(DEFAULT_ACCOUNT_ID),
            gid: a.gid.unwrap_or(DEFAULT_ACCOUNT_ID),
            shell: a.shell,
            sudo: a.sudo,
            groups,
            gecos: a.gecos.unwrap_or_default(),
            name,
        })
    }

    /// Reads, parses and validates the spec file at `path`.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Spec::parse(&text, path)
    }

    /// Parses and validates spec text. `path` is the file the text came from: it prefixes every
    /// error location, and its directory becomes [`Spec::dir`].
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        parse::parse(text, path)
    }

    /// One half of the spec.
    pub fn half(&self, part: Part) -> &Half {
        match part {
            Part::Base => &self.base,
            Part::User => &self.user,
        }
    }

    /// The host path of a tree entry's `src` (resolved against [`Spec::dir`]).
    pub fn source_path(&self, entry: &TreeEntry) -> PathBuf {
        self.dir.join(&entry.src)
    }

    /// The effective Debian settings of one half, or `None` if that half has no `debian` key.
    /// For [`Part::User`], repository settings it omits are inherited from `[base].debian`.
    pub fn debian_settings(&self, part: Part) -> Option<DebianSettings> {
        let own = self.half(part).debian.as_ref()?;
        let inherit = match part {
            Part::Base => None,
            Part::User => self.base.debian.as_ref(),
        };
        let mut s = own.effective(inherit);
        if part == Part::Base
            && let Some(boot) = &self.boot
        {
            for p in boot.packages() {
                if !s.packages.contains(&p) {
                    s.packages.push(p);
                }
            }
            s.packages.sort();
        }
        // An Ubuntu release's archives, when the spec names no mirror: the primary archive
        // for amd64 and i386, the ports archive for the other architectures.
        if check::is_ubuntu_suite(&s.suite) {
            let ports = !matches!(self.image.architecture.as_str(), "amd64" | "386");
            let given = |get: fn(&DebianSection) -> &Option<String>| {
                get(own).is_some() || inherit.is_some_and(|b| get(b).is_some())
            };
            if !given(|d| &d.mirror) {
                s.mirror = if ports {
                    UBUNTU_PORTS_MIRROR
                } else {
                    UBUNTU_MIRROR
                }
                .to_owned();
            }
            if !given(|d| &d.security_mirror) {
                s.security_mirror = if ports {
                    UBUNTU_PORTS_MIRROR
                } else {
                    UBUNTU_SECURITY_MIRROR
                }
                .to_owned();
            }
        }
        Some(s)
    }

    /// Canonical JSON (sorted keys, no whitespace, defaults filled in, relative paths as
    /// normalised strings) of one half, for hashing. Formatting, comments, key order, the order
    /// of Debian packages and components, and explicitly written defaults do not change it;
    /// any change of meaning does. The content of tree sources is not included: the builder
    /// hashes it separately.
    pub fn canonical(&self, part: Part) -> String {
        let half = self.half(part);
        let tree = half.tree.iter().map(|e| {
            let src = e.src.to_string_lossy();
            let src = check::relative_path(&src, "").unwrap_or_else(|_| src.into_owned());
            Json::obj([
                ("src", Json::Str(src)),
                ("dest", Json::Str(e.dest.absolute())),
                ("mode", Json::opt(e.mode, |m| Json::Int(m.into()))),
                ("uid", Json::Int(e.uid.unwrap_or(0).into())),
                ("gid", Json::Int(e.gid.unwrap_or(0).into())),
            ])
        });
        let debian = Json::opt(self.debian_settings(part), |d| {
            let mut fields = vec![
                ("packages", Json::strs(d.packages.clone())),
                ("suite", Json::Str(d.suite.clone())),
                ("mirror", Json::Str(d.mirror.clone())),
                ("security_mirror", Json::Str(d.security_mirror.clone())),
                ("updates", Json::Bool(d.updates)),
                ("components", Json::strs(d.components.clone())),
                (
                    "keyring",
                    Json::opt(d.keyring.clone(), |k| Json::str(k.to_string_lossy())),
                ),
                ("recommends", Json::Bool(d.recommends)),
                ("essential", Json::Bool(d.essential)),
                ("configure", Json::Bool(d.configure)),
            ];
            // Only written when there are some, so specs without them keep their hashes.
            if !d.debconf.is_empty() {
                fields.push(("debconf", Json::strs(d.debconf.clone())));
            }
            if !d.repos.is_empty() {
                let repos = d.repos.iter().map(|r| {
                    Json::obj([
                        ("name", Json::str(&r.name)),
                        ("uri", Json::str(&r.uri)),
                        ("suites", Json::strs(r.suites.clone().unwrap_or_default())),
                        ("components", Json::strs(r.components.clone())),
                        ("keyring", Json::str(r.keyring.to_string_lossy())),
                        ("priority", Json::Str(r.priority.to_string())),
                        ("architectures", Json::strs(r.architectures.clone())),
                    ])
                });
                fields.push(("repos", Json::Arr(repos.collect())));
            }
            Json::obj_vec(fields)
        });
        let nix = Json::opt(half.nix.as_ref(), |n| {
            let mut fields = vec![
                ("installables", Json::strs(n.installables.iter().cloned())),
                ("paths", Json::strs(n.paths.iter().cloned())),
                ("profile", Json::Str(n.effective_profile().absolute())),
            ];
            // Only written when set, so specs without it keep their hashes.
            if n.database {
                fields.push(("database", Json::Bool(true)));
            }
            Json::obj_vec(fields)
        });
        let mut fields = vec![
            ("format", Json::Int(CANONICAL_FORMAT)),
            ("part", Json::str(part.name())),
            ("tree", Json::Arr(tree.collect())),
            ("debian", debian),
            ("nix", nix),
        ];
        // Only written when there are some, so specs without them keep their hashes.
        if !half.links.is_empty() {
            let links: Vec<(String, String)> = half
                .links
                .iter()
                .map(|(p, t)| (p.absolute(), t.clone()))
                .collect();
            fields.push(("links", Json::map(links.iter().map(|(k, v)| (k, v)))));
        }
        let mut form = Json::obj_vec(fields);
        // Like the account, `fetch` appears only when used, so specs without it keep their
        // hashes.
        if let Json::Obj(fields) = &mut form
            && !half.fetch.is_empty()
        {
            let fetch = half.fetch.iter().map(|f| {
                Json::obj([
                    ("url", Json::Str(check::without_credentials(&f.url))),
                    ("sha256", Json::opt(f.sha256.as_ref(), Json::str)),
                    ("dest", Json::Str(f.dest.absolute())),
                    ("mode", Json::opt(f.mode, |m| Json::Int(m.into()))),
                    ("uid", Json::Int(f.uid.unwrap_or(0).into())),
                    ("gid", Json::Int(f.gid.unwrap_or(0).into())),
                    ("unpack", Json::opt(f.unpack.as_ref(), Json::str)),
                    (
                        "strip_components",
                        Json::Int(f.strip_components.unwrap_or(0).into()),
                    ),
                ])
            });
            fields.insert("fetch".to_owned(), Json::Arr(fetch.collect()));
        }
        if let Json::Obj(fields) = &mut form
            && let Some(p) = &half.python
        {
            let python = Json::obj([
                ("packages", Json::strs(p.packages.iter().cloned())),
                ("venv", Json::Str(p.effective_venv().absolute())),
                (
                    "index_url",
                    Json::opt(p.index_url.as_deref(), |u| {
                        Json::Str(check::without_credentials(u))
                    }),
                ),
            ]);
            fields.insert("python".to_owned(), python);
        }
        form.render()
    }

    /// Canonical JSON of everything that is neither half: `[image]` (architecture included) and
    /// `[config]`, with the same invariances as [`Spec::canonical`].
    pub fn canonical_image(&self) -> String {
        let image = Json::obj([
            ("name", Json::str(&self.image.name)),
            ("architecture", Json::str(&self.image.architecture)),
            ("annotations", Json::map(&self.image.annotations)),
        ]);
        let c = &self.config;
        let config = Json::obj([
            ("env", Json::map(&c.env)),
            (
                "entrypoint",
                Json::opt(c.entrypoint.as_ref(), |v| Json::strs(v.iter().cloned())),
            ),
            (
                "cmd",
                Json::opt(c.cmd.as_ref(), |v| Json::strs(v.iter().cloned())),
            ),
            ("workdir", Json::opt(c.workdir.as_ref(), Json::str)),
            ("user", Json::opt(c.user.as_ref(), Json::str)),
            ("labels", Json::map(&c.labels)),
            ("exposed_ports", Json::strs(c.exposed_ports.iter().cloned())),
        ]);
        let mut form = Json::obj([
            ("format", Json::Int(CANONICAL_FORMAT)),
            ("image", image),
            ("config", config),
        ]);
        // The account and Coder keys appear only when used, so specs without them keep the
        // hashes they had before these sections existed.
        if let Json::Obj(fields) = &mut form {
            if let Some(a) = self.account() {
                let account = Json::obj([
                    ("name", Json::Str(a.name)),
                    ("uid", Json::Int(a.uid.into())),
                    ("gid", Json::Int(a.gid.into())),
                    ("home", Json::Str(a.home)),
                    ("shell", Json::opt(a.shell, Json::Str)),
                    ("sudo", Json::opt(a.sudo, Json::Bool)),
                    ("groups", Json::strs(a.groups)),
                    ("gecos", Json::Str(a.gecos)),
                ]);
                fields.insert("account".to_owned(), account);
            }
            if let Some(sv) = &self.services {
                let services = Json::obj([
                    ("enable", Json::strs(sv.enable.iter().cloned())),
                    ("disable", Json::strs(sv.disable.iter().cloned())),
                ]);
                fields.insert("services".to_owned(), services);
            }
            if let Some(c) = &self.coder {
                let coder = Json::obj([
                    ("code_server", Json::Bool(c.code_server.unwrap_or(false))),
                    (
                        "startup_script",
                        Json::opt(c.startup_script.as_ref(), Json::str),
                    ),
                ]);
                fields.insert("coder".to_owned(), coder);
            }
        }
        form.render()
    }
}
