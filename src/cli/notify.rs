//! `lifeboat notify --test` and `lifeboat notify --failed-unit UNIT` (the
//! units' `OnFailure=lifeboat-notify@%n.service` runs the latter).

use anyhow::{bail, Result};
use clap::{ArgGroup, Args};

use crate::config::Config;
use crate::notify::{self, Event, Notice};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["test", "failed_unit"])))]
pub struct NotifyArgs {
    /// Send a test notice through every configured channel (notify.mail_to,
    /// notify.command) and say how each went. Exit 0: all sent, 1: one
    /// failed.
    #[arg(long)]
    pub test: bool,
    /// Tell that the systemd unit UNIT failed, with its status (run by
    /// lifeboat-notify@.service). Silent when the unit's process already
    /// sent a notice of its failure.
    #[arg(long, value_name = "UNIT")]
    pub failed_unit: Option<String>,
}

pub fn run(args: NotifyArgs, cfg: &Config) -> Result<u8> {
    let notice = match &args.failed_unit {
        Some(unit) => match notify::of_failed_unit(unit, &cfg.state_dir.value)? {
            Some(n) => n,
            None => return Ok(0),
        },
        None => Notice::new(
            Event::Test,
            "test notice from lifeboat",
            format!(
                "lifeboat notify --test: notices of failed or warning scheduled runs, \
                 layout drift and failed verifies or drills reach you this way.\n\
                 configuration: {}\n",
                cfg.path.display()
            ),
        ),
    };
    if !notify::configured(cfg) {
        let msg = format!(
            "no notification is configured: set notify.mail_to or notify.command in {}",
            cfg.path.display()
        );
        if args.test {
            bail!(msg);
        }
        log::warn!("{msg}");
        return Ok(0);
    }
    let mut code = 0;
    for d in notify::send(cfg, &notice) {
        match d.error {
            None => println!("sent: {}", d.channel),
            Some(e) => {
                println!("FAILED: {}: {e}", d.channel);
                code = 1;
            }
        }
    }
    Ok(code)
}
