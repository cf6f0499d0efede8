//! Running the real `nix`, `nix-build` commands and reading their output.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::NixError;

/// Experimental features the new `nix` command line needs (flake references need `flakes`).
const FEATURES: &str = "nix-command flakes";

/// What one store path is, as `nix path-info --json` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The store path, `/nix/store/<hash>-<name>`.
    pub path: String,
    /// The hash of its NAR serialisation (`sha256-...` or `sha256:...`).
    pub nar_hash: String,
    /// Size of its NAR serialisation in bytes.
    pub nar_size: u64,
    /// The store paths it refers to (itself included when it refers to itself).
    pub references: Vec<String>,
    /// The derivation that built it, when Nix knows it.
    pub deriver: Option<String>,
    /// Its signatures (`key-name:base64`).
    pub signatures: Vec<String>,
    /// Its content address (`fixed:r:sha256:...`, `text:sha256:...`) when it has one.
    pub ca: Option<String>,
    /// Whether this store built it (rather than got it from elsewhere).
    pub ultimate: bool,
}

#[derive(Deserialize)]
struct RawPathInfo {
    path: String,
    #[serde(rename = "narHash")]
    nar_hash: Option<String>,
    #[serde(rename = "narSize")]
    nar_size: Option<u64>,
    references: Option<Vec<String>>,
    deriver: Option<String>,
    signatures: Option<Vec<String>>,
    ca: Option<String>,
    ultimate: Option<bool>,
    valid: Option<bool>,
}

/// How an installable is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Installable {
    /// A Nix expression file (or a directory with `default.nix`), built with `nix-build`.
    File(PathBuf),
    /// Anything else the `nix` command takes (flake references, store paths), built with
    /// `nix build`.
    Cli(String),
}

impl Installable {
    /// Decides how to build `raw`, resolving relative paths against `dir`.
    pub(crate) fn classify(raw: &str, dir: &Path) -> Self {
        let cli = || Installable::Cli(raw.to_owned());
        if raw.contains('#') || raw.contains("://") || raw.starts_with("/nix/store/") {
            return cli();
        }
        let pathlike = raw == "."
            || raw == ".."
            || raw.starts_with('/')
            || raw.starts_with("./")
            || raw.starts_with("../")
            || raw.ends_with(".nix");
        if !pathlike {
            return cli();
        }
        let path = dir.join(raw.strip_prefix("./").unwrap_or(raw));
        // A directory holding only a flake is a flake reference; `nix-build` cannot build it.
        if path.is_dir() && path.join("flake.nix").exists() && !path.join("default.nix").exists() {
            return cli();
        }
        Installable::File(path)
    }
}

/// The `nix` commands, run in one directory against one store.
pub(crate) struct Nix<'a> {
    /// A store URI for `--store`; `None` leaves the choice to Nix's own configuration.
    pub store: Option<&'a str>,
    /// Working directory (relative installables are relative to it).
    pub dir: &'a Path,
    /// Keep Nix from substituting (`--offline`).
    pub offline: bool,
}

/// How many times a Nix command that met another Nix process in its store is run in all.
const BUSY_TRIES: u32 = 6;

/// Whether Nix failed because another Nix process was at the same store: it held the SQLite
/// database, or both were setting up a new store (its `gcroots/profiles` link).
fn store_busy(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    (text.contains("SQLite database") && text.contains("is busy"))
        || (text.contains("creating symlink from") && text.contains("File exists"))
}

impl Nix<'_> {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if program == "nix" {
            cmd.args(["--extra-experimental-features", FEATURES]);
        }
        if let Some(store) = self.store {
            cmd.args(["--store", store]);
        }
        if self.offline {
            cmd.args(["--option", "substitute", "false"]);
        }
        cmd.current_dir(self.dir).stdin(Stdio::null());
        cmd
    }

    /// Runs a command and returns its stdout, or an error carrying Nix's own stderr.
    fn run(&self, program: &str, args: &[&str]) -> Result<Vec<u8>, NixError> {
        let mut cmd = self.command(program);
        cmd.args(args);
        let mut shown_args: Vec<&str> = Vec::new();
        if self.offline {
            shown_args.extend(["--option", "substitute", "false"]);
        }
        shown_args.extend(args);
        let shown = describe(program, self.store, &shown_args);
        let mut out;
        let mut wait = std::time::Duration::from_millis(250);
        let mut tries = 0;
        loop {
            out = cmd.output().map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => NixError::NotInstalled {
                    program: program.to_owned(),
                    source,
                },
                _ => NixError::Spawn {
                    command: shown.clone(),
                    source,
                },
            })?;
            // Nix gives up where other Nix processes are at the same store (several builds
            // starting on a fresh store at once); what it was asked is safe to ask again.
            tries += 1;
            if out.status.success() || tries == BUSY_TRIES || !store_busy(&out.stderr) {
                break;
            }
            std::thread::sleep(wait);
            wait *= 2;
        }
        if !out.status.success() {
            return Err(NixError::Failed {
                command: shown,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// The store Nix uses when no `--store` is given (its `store` setting, which
    /// `NIX_REMOTE`, `NIX_CONFIG` and `nix.conf` may set).
    pub(crate) fn configured_store(&self) -> Result<String, NixError> {
        let args = ["show-config", "--json"];
        let out = self.run("nix", &args)?;
        let bad = |message: String| NixError::Output {
            command: describe("nix", self.store, &args),
            message,
        };
        let json: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        json["store"]["value"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad("no `store` setting in the output".into()))
    }

    /// Builds a Nix expression file with `nix-build` and returns its output paths.
    pub(crate) fn build_file(&self, file: &Path) -> Result<Vec<String>, NixError> {
        let file = file.to_string_lossy();
        let args = ["--no-out-link", file.as_ref()];
        let out = self.run("nix-build", &args)?;
        let paths: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if paths.is_empty() {
            return Err(NixError::Output {
                command: describe("nix-build", self.store, &args),
                message: "it printed no output path".into(),
            });
        }
        Ok(paths)
    }

    /// Builds installables with `nix build` and returns the output paths of each result, in
    /// order.
    pub(crate) fn build(&self, installables: &[String]) -> Result<Vec<Vec<String>>, NixError> {
        let mut args = vec!["build", "--no-link", "--json"];
        args.extend(installables.iter().map(String::as_str));
        let out = self.run("nix", &args)?;
        let bad = |message: String| NixError::Output {
            command: describe("nix", self.store, &args),
            message,
        };
        let json: Vec<serde_json::Value> =
            serde_json::from_slice(&out).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let mut results = Vec::new();
        for item in &json {
            let mut paths = Vec::new();
            if let Some(outputs) = item["outputs"].as_object() {
                // `out` first: it is what a profile shows of a package.
                let mut names: Vec<&String> = outputs.keys().collect();
                names.sort_by_key(|n| (n.as_str() != "out", n.as_str()));
                for name in names {
                    let path = outputs[name.as_str()]
                        .as_str()
                        .ok_or_else(|| bad(format!("output `{name}` is not a path")))?;
                    paths.push(path.to_owned());
                }
            } else if let Some(path) = item["path"].as_str().or(item["outPath"].as_str()) {
                paths.push(path.to_owned());
            } else {
                return Err(bad(format!("unexpected result {item}")));
            }
            results.push(paths);
        }
        Ok(results)
    }

    /// What `nix flake metadata` says pins `flake`: its locked URL and each input's locked
    /// revision (or NAR hash).
    pub(crate) fn flake_lock(&self, flake: &str) -> Result<crate::LockedFlake, NixError> {
        let args = ["flake", "metadata", "--json", flake];
        let out = self.run("nix", &args)?;
        let bad = |message: String| NixError::Output {
            command: describe("nix", self.store, &args),
            message,
        };
        let json: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let url = json["url"]
            .as_str()
            .ok_or_else(|| bad("no `url` in the output".into()))?
            .to_owned();
        let mut inputs = std::collections::BTreeMap::new();
        if let Some(nodes) = json["locks"]["nodes"].as_object() {
            let root = json["locks"]["root"].as_str().unwrap_or("root");
            for (name, node) in nodes {
                if name == root {
                    continue;
                }
                let locked = &node["locked"];
                if let Some(pin) = locked["rev"].as_str().or(locked["narHash"].as_str()) {
                    inputs.insert(name.clone(), pin.to_owned());
                }
            }
        }
        Ok(crate::LockedFlake {
            flake: flake.to_owned(),
            url,
            inputs,
        })
    }

    /// The closure of `paths`: every store path they need, with references and NAR hashes.
    pub(crate) fn closure(&self, paths: &[String]) -> Result<Vec<PathInfo>, NixError> {
        let mut args = vec!["path-info", "--json", "--recursive"];
        args.extend(paths.iter().map(String::as_str));
        let out = self.run("nix", &args)?;
        let bad = |message: String| NixError::Output {
            command: describe("nix", self.store, &args),
            message,
        };
        let raw: Vec<RawPathInfo> =
            serde_json::from_slice(&out).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let mut infos = Vec::with_capacity(raw.len());
        for r in raw {
            if r.valid == Some(false) {
                return Err(NixError::NotInStore(r.path));
            }
            let missing = |field: &str| bad(format!("no `{field}` for `{}`", r.path));
            infos.push(PathInfo {
                nar_hash: r.nar_hash.ok_or_else(|| missing("narHash"))?,
                nar_size: r.nar_size.ok_or_else(|| missing("narSize"))?,
                references: r.references.ok_or_else(|| missing("references"))?,
                deriver: r.deriver.filter(|d| !d.is_empty()),
                signatures: r.signatures.unwrap_or_default(),
                ca: r.ca.filter(|c| !c.is_empty()),
                ultimate: r.ultimate.unwrap_or(false),
                path: r.path,
            });
        }
        infos.sort_by(|a, b| a.path.cmp(&b.path));
        infos.dedup_by(|a, b| a.path == b.path);
        Ok(infos)
    }
}

/// A command line as a person would type it, for messages.
fn describe(program: &str, store: Option<&str>, args: &[&str]) -> String {
    let mut parts = vec![program];
    if let Some(store) = store {
        parts.extend(["--store", store]);
    }
    parts.extend(args);
    parts.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// One shell word, quoted when the shell would otherwise change it.
fn quote(word: &str) -> String {
    let special = |c: char| c.is_whitespace() || "&;|<>()$'\"*?`\\".contains(c);
    if word.is_empty() || word.contains(special) {
        format!("'{}'", word.replace('\'', r"'\''"))
    } else {
        word.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command that finds the store database busy is run again, a bounded number of times;
    /// other failures are reported at once.
    #[test]
    fn a_busy_store_database_is_tried_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let script = |name: &str, body: &str| {
            let path = d.join(name);
            std::fs::write(&path, format!("#!/bin/sh\necho x >>\"$0.runs\"\n{body}\n"))
                .expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            path.to_string_lossy().into_owned()
        };
        let runs =
            |p: &str| std::fs::read_to_string(format!("{p}.runs")).map_or(0, |t| t.lines().count());
        let nix = Nix {
            store: None,
            dir: d,
            offline: false,
        };
        let busy = "echo \"error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\" >&2";
        let twice = script(
            "busy-twice",
            &format!(
                "[ \"$(wc -l <\"$0.runs\")\" -gt 2 ] && {{ echo done; exit 0; }}; {busy}; exit 1"
            ),
        );
        assert_eq!(nix.run(&twice, &[]).expect("third run"), b"done\n");
        assert_eq!(runs(&twice), 3);
        let always = script("busy-always", &format!("{busy}; exit 1"));
        let err = nix.run(&always, &[]).expect_err("busy every time");
        assert!(err.to_string().contains("failed"), "{err}");
        assert_eq!(runs(&always), BUSY_TRIES as usize);
        let init = script(
            "init-race",
            "[ \"$(wc -l <\"$0.runs\")\" -gt 1 ] && exit 0; echo \"error: creating symlink from \
             '/s/nix/var/nix/gcroots/profiles' to '/s/nix/var/nix/profiles': File exists\" >&2; exit 1",
        );
        nix.run(&init, &[]).expect("second run");
        assert_eq!(runs(&init), 2, "a store being set up by another process");
        let other = script("other", "echo 'error: attribute missing' >&2; exit 1");
        nix.run(&other, &[]).expect_err("fails");
        assert_eq!(runs(&other), 1, "other failures are not run again");
    }

    #[test]
    fn installables_are_files_or_cli_references() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("flake")).expect("mkdir");
        std::fs::write(d.join("flake/flake.nix"), "{}").expect("write");
        std::fs::create_dir(d.join("expr")).expect("mkdir");
        std::fs::write(d.join("expr/default.nix"), "{}").expect("write");
        assert_eq!(
            Installable::classify("./default.nix", d),
            Installable::File(d.join("default.nix"))
        );
        assert_eq!(
            Installable::classify("pkgs.nix", d),
            Installable::File(d.join("pkgs.nix"))
        );
        assert_eq!(
            Installable::classify("./expr", d),
            Installable::File(d.join("expr"))
        );
        for cli in [
            ".#hello",
            "nixpkgs#git",
            "github:owner/repo#pkg",
            "./flake",
            "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
        ] {
            assert_eq!(
                Installable::classify(cli, d),
                Installable::Cli(cli.into()),
                "{cli}"
            );
        }
    }

    #[test]
    fn missing_program_is_reported_as_not_installed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nix = Nix {
            store: None,
            dir: dir.path(),
            offline: false,
        };
        let err = nix
            .run("strata-no-such-nix-program", &["--version"])
            .expect_err("missing program");
        assert!(matches!(err, NixError::NotInstalled { .. }), "{err:?}");
        assert!(err.to_string().contains("nix-bin"), "{err}");
    }

    #[test]
    fn offline_commands_do_not_substitute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nix = Nix {
            store: None,
            dir: dir.path(),
            offline: true,
        };
        let out = nix.run("echo", &["build"]).expect("echo");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "--option substitute false build\n"
        );
        let err = nix.run("false", &[]).expect_err("false fails");
        assert!(
            err.to_string()
                .contains("`false --option substitute false`"),
            "{err}"
        );
    }

    #[test]
    fn failure_carries_the_commands_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nix = Nix {
            store: None,
            dir: dir.path(),
            offline: false,
        };
        let err = nix
            .run("sh", &["-c", "echo 'error: boom' >&2; exit 3"])
            .expect_err("failing command");
        let msg = err.to_string();
        assert!(msg.contains("error: boom"), "{msg}");
        assert!(msg.contains("`sh -c 'echo"), "{msg}");
        assert_eq!(
            describe("nix", Some("local?root=/x y"), &["build", ".#a"]),
            "nix --store 'local?root=/x y' build .#a"
        );
    }
}
