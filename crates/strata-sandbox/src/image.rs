//! From an image configuration to the command `strata run` starts: the entrypoint and cmd,
//! the user and working directory, and the environment, each overridable as `docker run`'s
//! flags override them.

use std::path::Path;

use strata_oci::image::RunConfig;

use crate::{Command, DEFAULT_PATH, SandboxError, Stdio, resolve_user};

/// What the caller overrides of the image's configuration.
#[derive(Debug, Default)]
pub struct RunRequest {
    /// The command and its arguments; empty: the image's cmd (after its entrypoint), else
    /// `/bin/sh`.
    pub command: Vec<String>,
    /// `USER[:GROUP]` instead of the image's user.
    pub user: Option<String>,
    /// Working directory instead of the image's (must be absolute).
    pub workdir: Option<String>,
    /// `KEY=VALUE` entries set last, or `KEY` to copy from `host_env`.
    pub env: Vec<String>,
    /// Give the command a terminal (and a `TERM`).
    pub tty: bool,
    /// Standard input.
    pub stdin: Stdio,
}

/// The command to run in an image with configuration `config`, whose root file systems (top
/// first) are `roots` (for `/etc/passwd` and `/etc/group`). `host_env` looks up strata's own
/// environment (for `TERM` and `--env KEY`).
pub fn image_command(
    config: &RunConfig,
    request: RunRequest,
    roots: &[&Path],
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, SandboxError> {
    let user_spec = request
        .user
        .clone()
        .or_else(|| config.user.clone())
        .unwrap_or_default();
    let user = resolve_user(&user_spec, roots)?;
    let workdir = request
        .workdir
        .clone()
        .or_else(|| config.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        return Err(SandboxError::Invalid(format!(
            "working directory `{workdir}` must be an absolute path"
        )));
    }
    let env = environment(
        &config.env,
        &request.env,
        user.home.as_deref(),
        request.tty,
        host_env,
    )?;
    let rest = if request.command.is_empty() {
        config.cmd.clone().unwrap_or_default()
    } else {
        request.command
    };
    let mut argv: Vec<String> = config
        .entrypoint
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(rest)
        .collect();
    if argv.is_empty() {
        argv.push("/bin/sh".into());
    }
    Ok(Command {
        argv,
        env,
        user,
        workdir,
        tty: request.tty,
        stdin: request.stdin,
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
    })
}

/// The image's environment, then HOME, PATH and TERM defaults, then the overrides.
fn environment(
    image: &[String],
    overrides: &[String],
    home: Option<&str>,
    tty: bool,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SandboxError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| match env
        .iter_mut()
        .find(|(key, _)| key == k)
    {
        Some(entry) => entry.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    for e in image {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(&mut env, k, v);
    }
    let has = |env: &Vec<(String, String)>, k: &str| env.iter().any(|(key, _)| key == k);
    if !has(&env, "PATH") {
        set(&mut env, "PATH", DEFAULT_PATH);
    }
    if !has(&env, "HOME") {
        set(&mut env, "HOME", home.unwrap_or("/"));
    }
    if tty && !has(&env, "TERM") {
        let term = host_env("TERM").unwrap_or_else(|| "xterm".into());
        set(&mut env, "TERM", &term);
    }
    for e in overrides {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => set(&mut env, k, v),
            Some(_) => {
                return Err(SandboxError::Invalid(format!(
                    "environment entry `{e}`: expected KEY=VALUE"
                )));
            }
            None => {
                if let Some(v) = host_env(e) {
                    set(&mut env, e, &v);
                }
            }
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_cmd_env_and_overrides() {
        let config = RunConfig {
            env: vec!["PATH=/bin".into(), "A=1".into()],
            entrypoint: Some(vec!["/bin/tini".into(), "--".into()]),
            cmd: Some(vec!["sh".into()]),
            working_dir: Some("/work".into()),
            ..RunConfig::default()
        };
        let host = |k: &str| (k == "FROM_HOST").then(|| "h".to_owned());
        let cmd = image_command(&config, RunRequest::default(), &[], &host).expect("command");
        assert_eq!(cmd.argv, ["/bin/tini", "--", "sh"]);
        assert_eq!(cmd.workdir, "/work");
        assert_eq!(cmd.env, ["PATH=/bin", "A=1", "HOME=/root"]);
        let request = RunRequest {
            command: vec!["echo".into(), "x".into()],
            env: vec!["A=2".into(), "FROM_HOST".into(), "MISSING".into()],
            workdir: Some("/tmp".into()),
            ..RunRequest::default()
        };
        let cmd = image_command(&config, request, &[], &host).expect("command");
        assert_eq!(cmd.argv, ["/bin/tini", "--", "echo", "x"]);
        assert_eq!(cmd.workdir, "/tmp");
        assert_eq!(cmd.env, ["PATH=/bin", "A=2", "HOME=/root", "FROM_HOST=h"]);
        let relative = RunRequest {
            workdir: Some("rel".into()),
            ..RunRequest::default()
        };
        assert!(image_command(&config, relative, &[], &host).is_err());
        let bad_env = RunRequest {
            env: vec!["=x".into()],
            ..RunRequest::default()
        };
        assert!(image_command(&config, bad_env, &[], &host).is_err());
        let empty = image_command(&RunConfig::default(), RunRequest::default(), &[], &host)
            .expect("command");
        assert_eq!(empty.argv, ["/bin/sh"]);
    }
}
