//! What `mkrescue --usb` and `--pxe` wrote, recorded in `rescue.json`
//! (`media`) so that `lifeboat status` can tell an admin that a stick or a
//! PXE tree holds an older image than the current one: the timer rebuilds
//! the image in the output folder, never the stick in a drawer.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::secureboot::NotCapable;
use super::BuildRecord;

/// Which medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Usb,
    Pxe,
}

impl std::fmt::Display for MediaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MediaKind::Usb => "USB disk",
            MediaKind::Pxe => "PXE tree",
        })
    }
}

/// One medium written from an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaOutput {
    pub kind: MediaKind,
    /// The device or image file (USB), the folder (PXE).
    pub target: String,
    /// The disk's model and serial (a device); none for a file or folder.
    #[serde(default)]
    pub identity: Option<String>,
    pub written_at: String,
    /// `built_at` of the image written onto it.
    pub image_built_at: String,
    /// Boots with Secure Boot on (shim, signed GRUB, signed kernel).
    pub secure_boot: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_capable: Option<NotCapable>,
}

impl MediaOutput {
    /// The summary line of `mkrescue`.
    pub fn secure_boot_summary(&self) -> String {
        match &self.not_capable {
            None => "Secure Boot capable (shim -> signed GRUB -> signed kernel)".into(),
            Some(why) => format!("no Secure Boot: {why}"),
        }
    }
}

/// Whether a medium with the loaders `signed` (found for it, or why not)
/// and the kernel `vmlinuz` boots with Secure Boot on: why not, or `None`.
pub fn not_capable<T>(signed: &Result<T, NotCapable>, vmlinuz: &Path) -> Option<NotCapable> {
    match signed {
        Err(why) => Some(why.clone()),
        Ok(_) if !super::secureboot::pe_signed(vmlinuz).unwrap_or(false) => {
            Some(NotCapable::UnsignedKernel(vmlinuz.display().to_string()))
        }
        Ok(_) => None,
    }
}

/// Records `written` in the image's `rescue.json` in `output`, replacing the
/// entry of the same medium and target.
pub fn record(output: &Path, written: MediaOutput) -> Result<()> {
    let mut rec = BuildRecord::load(output)?;
    rec.media
        .retain(|m| !(m.kind == written.kind && m.target == written.target));
    rec.media.push(written);
    rec.save(output)
}

/// The media that hold an older image than `rec` (one line each), for
/// `status` and `check`.
pub fn stale(rec: &BuildRecord) -> Vec<String> {
    rec.media
        .iter()
        .filter(|m| m.image_built_at != rec.built_at)
        .map(|m| {
            format!(
                "the {} {}{} (written {}) holds an older rescue image than the current one \
                 (built {}, the {} holds the one built {}): write it again with mkrescue --{}",
                m.kind,
                m.target,
                m.identity
                    .as_deref()
                    .map(|i| format!(" ({i})"))
                    .unwrap_or_default(),
                m.written_at,
                rec.built_at,
                m.kind,
                m.image_built_at,
                match m.kind {
                    MediaKind::Usb => "usb",
                    MediaKind::Pxe => "pxe",
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usb(image_built_at: &str) -> MediaOutput {
        MediaOutput {
            kind: MediaKind::Usb,
            target: "/dev/sdz".into(),
            identity: Some("model Stick, serial 42".into()),
            written_at: "2026-12-01T10:00:00Z".into(),
            image_built_at: image_built_at.into(),
            secure_boot: true,
            not_capable: None,
        }
    }

    #[test]
    fn a_medium_older_than_the_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = crate::schedule::run::tests::record("2026-12-01T09:00:00Z");
        rec.save(dir.path()).unwrap();
        record(dir.path(), usb("2026-12-01T09:00:00Z")).unwrap();
        // The same stick written again replaces its entry.
        record(dir.path(), usb("2026-12-01T09:00:00Z")).unwrap();
        let pxe = MediaOutput {
            kind: MediaKind::Pxe,
            target: "/srv/tftp".into(),
            identity: None,
            not_capable: Some(NotCapable::NoShim(
                "/usr/lib/shim/shimx64.efi.signed".into(),
            )),
            secure_boot: false,
            ..usb("2026-12-01T09:00:00Z")
        };
        record(dir.path(), pxe).unwrap();
        let loaded = BuildRecord::load(dir.path()).unwrap();
        assert_eq!(loaded.media.len(), 2);
        assert!(stale(&loaded).is_empty());

        // A rebuild (the timer's) keeps the media, now older than the image.
        rec = loaded;
        rec.built_at = "2026-12-02T09:00:00Z".into();
        let lines = stale(&rec);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "the USB disk /dev/sdz (model Stick, serial 42) (written 2026-12-01T10:00:00Z) holds \
             an older rescue image than the current one (built 2026-12-02T09:00:00Z, the USB disk \
             holds the one built 2026-12-01T09:00:00Z): write it again with mkrescue --usb"
        );
        assert!(
            lines[1].starts_with("the PXE tree /srv/tftp (written"),
            "{}",
            lines[1]
        );
        let json = serde_json::to_string(&rec.media[1]).unwrap();
        assert!(json.contains(r#""reason":"no_shim""#), "{json}");
    }
}
