use std::process::ExitCode;

use clap::Parser;
use lifeboat::cli::{self, Cli};

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`lifeboat layout show | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // A monitoring plugin reports a bad command line as UNKNOWN (3).
        Err(e) if e.use_stderr() && cli::subcommand_word(&args) == Some("check") => {
            let msg = e.kind().as_str().unwrap_or("bad command line");
            println!("LIFEBOAT UNKNOWN - {msg}; see lifeboat check --help");
            let _ = e.print();
            return ExitCode::from(3);
        }
        Err(e) => e.exit(),
    };
    lifeboat::logging::init(cli.verbose);
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("lifeboat: error: {err:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
