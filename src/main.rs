use std::process::ExitCode;

use clap::Parser;
use lifeboat::cli::{self, Cli};

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`lifeboat layout show | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // OS strings: a non-UTF-8 argument is a path (PathBuf) or a clap error,
    // never a panic.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // A monitoring plugin reports a bad command line as UNKNOWN (3).
        Err(e) if e.use_stderr() && cli::subcommand_word(&args) == Some("check") => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad command line");
            let msg = first.trim_start_matches("error: ").replace('|', "/");
            println!("LIFEBOAT UNKNOWN - {msg}; see lifeboat check --help | rescue_age=U;; backup_age=U;; drift=U");
            let _ = e.print();
            return ExitCode::from(3);
        }
        Err(e) => e.exit(),
    };
    lifeboat::logging::init(cli.verbose);
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            lifeboat::logging::print_error(&format!("{err:#}"));
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
