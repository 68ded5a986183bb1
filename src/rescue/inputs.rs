//! What decides a rescue image's contents, recorded in `rescue.json` so
//! that the scheduled run rebuilds only when the image would change: the
//! layout, the kernel, lifeboat itself, and the configuration that shapes
//! the image.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::build::{cmdline, sha256_file, Compression, Options};
use super::kernel::{self, Kernel};
use super::secureboot;

/// The inputs of one build. Two builds with equal inputs give the same
/// image (but for the build time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInputs {
    pub lifeboat_version: String,
    /// The running lifeboat executable, which the image ships.
    pub lifeboat_sha256: String,
    pub kernel_version: String,
    /// The kernel image (a package update can keep the version string).
    pub kernel_sha256: String,
    pub layout_sha256: Option<String>,
    /// The configuration: rescue.compression, rescue.append (in the
    /// command line), rescue.add_programs, rescue.iso, and the options
    /// that put secrets or a backup in.
    pub compression: Compression,
    pub cmdline: String,
    pub add_programs: Vec<String>,
    pub iso: bool,
    pub luks_headers: bool,
    pub include_backup: Option<String>,
    /// rescue.ssh_authorized_keys (its contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_keys_sha256: Option<String>,
    /// rescue.ssh_server when SSH is in and it is not `auto` (records of
    /// `auto` images stay as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_server: Option<super::ssh::SshServerChoice>,
    /// The SHA-256 of the signed shim and GRUB put on the ISO (none
    /// without them, and in records of older versions).
    #[serde(default)]
    pub secure_boot_loaders: Option<String>,
}

impl ImageInputs {
    /// The inputs `opts` would build from now (the kernel chosen as
    /// mkrescue chooses it).
    pub fn of(opts: &Options) -> Result<ImageInputs> {
        let kernel =
            kernel::find_kernel(opts.kernel.as_deref(), &opts.boot_dir, &opts.modules_root)?;
        ImageInputs::with_kernel(opts, &kernel)
    }

    pub(super) fn with_kernel(opts: &Options, kernel: &Kernel) -> Result<ImageInputs> {
        let me = std::env::current_exe().context("finding lifeboat's own executable")?;
        Ok(ImageInputs {
            lifeboat_version: crate::VERSION.to_string(),
            lifeboat_sha256: sha256_file(&me)?,
            kernel_version: kernel.version.clone(),
            kernel_sha256: sha256_file(&kernel.image)?,
            layout_sha256: opts.layout.as_deref().map(sha256_file).transpose()?,
            compression: opts.compression,
            cmdline: cmdline(opts),
            add_programs: opts.add_programs.clone(),
            iso: !opts.no_iso,
            luks_headers: opts.include_luks_headers,
            include_backup: opts
                .include_backup
                .as_deref()
                .map(|p| p.display().to_string()),
            ssh_keys_sha256: opts
                .ssh_authorized_keys
                .as_deref()
                .map(sha256_file)
                .transpose()?,
            ssh_server: Some(opts.ssh_server).filter(|c| {
                opts.ssh_authorized_keys.is_some() && *c != super::ssh::SshServerChoice::Auto
            }),
            secure_boot_loaders: match secureboot::find_loaders(&opts.secure_boot_root()) {
                Ok(l) if !opts.no_iso => Some(secureboot::loaders_sha256(&l)?),
                _ => None,
            },
        })
    }

    /// The SHA-256 of the inputs (their JSON).
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).expect("inputs serialize");
        crate::backup::sha256_hex(&json)
    }

    /// Why an image built from `self` differs from one built from `now`,
    /// one phrase per input, the layout left out (the drift check names
    /// layout changes with their details).
    pub fn changes(&self, now: &ImageInputs) -> Vec<String> {
        let mut out = Vec::new();
        let mut differs = |what: &str, old: &str, new: &str| {
            if old != new {
                out.push(format!("{what} changed ({old} -> {new})"));
            }
        };
        differs("lifeboat", &self.lifeboat_version, &now.lifeboat_version);
        differs("the kernel", &self.kernel_version, &now.kernel_version);
        if self.lifeboat_version == now.lifeboat_version
            && self.lifeboat_sha256 != now.lifeboat_sha256
        {
            out.push("the lifeboat executable changed".into());
        }
        if self.kernel_version == now.kernel_version && self.kernel_sha256 != now.kernel_sha256 {
            out.push(format!(
                "the kernel image of {} changed",
                now.kernel_version
            ));
        }
        let config = |i: &ImageInputs| {
            (
                i.compression,
                i.cmdline.clone(),
                i.add_programs.clone(),
                i.iso,
                i.luks_headers,
                i.include_backup.clone(),
                i.ssh_keys_sha256.clone(),
                i.ssh_server,
            )
        };
        if self.secure_boot_loaders != now.secure_boot_loaders {
            out.push("the signed boot loaders (shim, GRUB) changed".into());
        }
        if config(self) != config(now) {
            out.push("the [rescue] configuration changed".into());
        }
        out
    }
}
