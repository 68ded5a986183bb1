use std::process::ExitCode;

use clap::Parser;
use lifeboat::cli::{self, Cli};

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`lifeboat layout show | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    lifeboat::logging::init(cli.verbose);
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("lifeboat: error: {err:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
