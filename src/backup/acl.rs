//! POSIX ACLs: the kernel's binary xattr form (`system.posix_acl_access`,
//! `system.posix_acl_default`) and the text form of `SCHILY.acl.*` records.
//!
//! We write numeric ids (`user:1000:r--`), one entry a line, as GNU tar
//! does with names; the rescue system has no user database. We read names
//! too (GNU tar archives, bsdtar's `user:alice:r--:1000`), resolved with
//! the host's user database when no id is given.

use anyhow::{bail, Context, Result};

pub const ACCESS: &[u8] = b"system.posix_acl_access";
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// Binary ACL xattr to text, or an error for a malformed value.
pub fn to_text(bin: &[u8]) -> Result<String> {
    if bin.len() < 4 || (bin.len() - 4) % 8 != 0 {
        bail!("malformed ACL of {} bytes", bin.len());
    }
    let version = u32::from_le_bytes(bin[..4].try_into().expect("4 bytes"));
    if version != VERSION {
        bail!("unknown ACL version {version}");
    }
    let mut out = String::new();
    for e in bin[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let (name, qualifier) = match tag {
            USER_OBJ => ("user", String::new()),
            USER => ("user", id.to_string()),
            GROUP_OBJ => ("group", String::new()),
            GROUP => ("group", id.to_string()),
            MASK => ("mask", String::new()),
            OTHER => ("other", String::new()),
            t => bail!("unknown ACL tag {t:#x}"),
        };
        let p = |bit: u16, c: char| if perm & bit != 0 { c } else { '-' };
        out.push_str(&format!(
            "{name}:{qualifier}:{}{}{}\n",
            p(4, 'r'),
            p(2, 'w'),
            p(1, 'x')
        ));
    }
    Ok(out)
}

/// Text ACL (entries separated by newlines or commas, `#` comments) to
/// the binary xattr form, entries in the kernel's canonical order.
pub fn from_text(text: &str) -> Result<Vec<u8>> {
    let mut entries: Vec<(u16, u32, u16)> = Vec::new();
    for raw in text.split(['\n', ',']) {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split(':').collect();
        if parts.len() < 3 || parts.len() > 4 {
            bail!("bad ACL entry {line:?}");
        }
        let (kind, qual, perms) = (parts[0], parts[1], parts[2]);
        let explicit_id = parts.get(3).map(|s| s.parse::<u32>());
        let tag = match (kind, qual.is_empty()) {
            ("user" | "u", true) => USER_OBJ,
            ("user" | "u", false) => USER,
            ("group" | "g", true) => GROUP_OBJ,
            ("group" | "g", false) => GROUP,
            ("mask" | "m", _) => MASK,
            ("other" | "o", _) => OTHER,
            _ => bail!("bad ACL entry {line:?}"),
        };
        let id = match tag {
            USER | GROUP => match explicit_id {
                Some(Ok(id)) => id,
                Some(Err(_)) => bail!("bad id in ACL entry {line:?}"),
                None => {
                    resolve(qual, tag == USER).with_context(|| format!("ACL entry {line:?}"))?
                }
            },
            _ => UNDEFINED_ID,
        };
        let mut perm = 0u16;
        for c in perms.chars() {
            perm |= match c {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                '-' => 0,
                _ => bail!("bad permissions in ACL entry {line:?}"),
            };
        }
        entries.push((tag, id, perm));
    }
    entries.sort_by_key(|&(tag, id, _)| (tag, id));
    let mut out = Vec::with_capacity(4 + 8 * entries.len());
    out.extend_from_slice(&VERSION.to_le_bytes());
    for (tag, id, perm) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

fn resolve(name: &str, user: bool) -> Result<u32> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let found = if user {
        nix::unistd::User::from_name(name)?.map(|u| u.uid.as_raw())
    } else {
        nix::unistd::Group::from_name(name)?.map(|g| g.gid.as_raw())
    };
    found.with_context(|| format!("unknown {} {name:?}", if user { "user" } else { "group" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `setfacl -m u:1000:r` on a 0644 file, as `getfattr -e hex` shows it.
    const ACCESS_HEX: &str =
        "0200000001000600ffffffff02000400e803000004000400ffffffff10000400ffffffff20000400ffffffff";

    #[test]
    fn binary_and_text_round_trip() {
        let bin = hex::decode(ACCESS_HEX).unwrap();
        let text = to_text(&bin).unwrap();
        assert_eq!(
            text,
            "user::rw-\nuser:1000:r--\ngroup::r--\nmask::r--\nother::r--\n"
        );
        assert_eq!(from_text(&text).unwrap(), bin);
    }

    #[test]
    fn other_spellings_parse() {
        let bin = hex::decode(ACCESS_HEX).unwrap();
        for text in [
            // bsdtar: commas and a trailing numeric id.
            "user::rw-,user:someone:r--:1000,group::r--,mask::r--,other::r--",
            // getfacl with comments, out of order.
            "# file: x\nother::r--\nuser:1000:r--\nuser::rw-\nmask::r--\ngroup::r--\n",
            // Names resolved from the user database.
            "user::rw-\nuser:1000:r--\ngroup::r--\nmask::r--\nother::r--",
        ] {
            assert_eq!(from_text(text).unwrap(), bin, "{text}");
        }
        let root =
            from_text("user::rwx\nuser:root:r-x\ngroup::r-x\nmask::r-x\nother::---").unwrap();
        assert!(to_text(&root).unwrap().contains("user:0:r-x"));
    }

    #[test]
    fn bad_acls_fail() {
        assert!(to_text(&[2, 0, 0]).is_err());
        assert!(to_text(&hex::decode("0300000001000600ffffffff").unwrap()).is_err());
        for bad in [
            "user:rw-",
            "robot::rwx",
            "user::rwz",
            "user:nosuchuser-lifeboat:r--",
        ] {
            assert!(from_text(bad).is_err(), "{bad}");
        }
    }
}
