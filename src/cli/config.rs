//! `lifeboat config show`.

use anyhow::Result;
use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the effective configuration as TOML, each value with where it
    /// came from: default, file and line, environment or flag.
    Show {
        /// Print JSON: every key with its value and source.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ConfigCmd, cfg: &Config) -> Result<u8> {
    match cmd {
        ConfigCmd::Show { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&cfg.to_json())?);
            } else {
                print!("{}", cfg.show());
            }
            Ok(0)
        }
    }
}
