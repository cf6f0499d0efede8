//! One file per command. Each parses nothing itself (see `args`), calls the library crates,
//! and prints.

mod build;
mod check;
mod copy;
mod disk;
mod gc;
mod inspect;
mod lock;
mod login;
mod run;
mod serve;
mod template;

use anyhow::Result;
use strata_store::Store;

use crate::args::{Cli, CoderCommand, Command};

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> Result<()> {
    let store_root = cli.store.clone().unwrap_or_else(Store::default_root);
    let flags = &cli.registry;
    match cli.command {
        Command::Build(args) => build::run(&store_root, args, flags),
        Command::Check(args) => check::run(&store_root, args, flags),
        Command::Coder(CoderCommand::Template(args)) => template::run(&store_root, args, flags),
        Command::Push(args) => copy::push(&store_root, args, flags),
        Command::Pull(args) => copy::pull(&store_root, args, flags),
        Command::Copy(args) => copy::copy(&store_root, args, flags),
        Command::Login(args) => login::run(args, flags),
        Command::Inspect(args) => inspect::run(args),
        Command::Lock(args) => lock::run(&store_root, args),
        Command::Run(args) => run::run(&store_root, args, flags),
        Command::Gc(args) => gc::run(&store_root, args),
        Command::Serve(args) => serve::run(&store_root, args, flags),
    }
}
