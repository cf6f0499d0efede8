//! `strata login HOST`.

use std::io::BufRead;

use anyhow::{Context, Result, bail};
use strata_registry::{Client, ClientOptions, Credentials};

use crate::args::{LoginArgs, RegistryFlags};

/// `strata login HOST`: checks the credentials with the registry, then stores them like
/// `docker login` does.
pub fn run(args: LoginArgs, flags: &RegistryFlags) -> Result<()> {
    let host = args.host.as_str();
    let creds = match (&flags.creds, args.username) {
        (Some(c), _) => c
            .parse::<Credentials>()
            .map_err(|e| anyhow::anyhow!("--creds: {e}"))?,
        (None, Some(user)) => {
            if !args.password_stdin {
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
