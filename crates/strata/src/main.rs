//! The `strata` command line. All the work happens in the library crates: `args` holds the
//! argument types, `commands/` one file per command that calls the libraries and prints their
//! results, `progress` draws progress bars.

/// `println!` that treats a closed stdout (`strata ... | head`) as the reader's choice, not a
/// failure of strata.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, $($arg)*) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e.into());
            }
        }
    }};
}

mod args;
mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the failure and each cause after it.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
