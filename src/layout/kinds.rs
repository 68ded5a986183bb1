//! Closed and open sets of names the layout holds as types rather than
//! strings: file system types, LVM segment types, GRUB platforms.
//!
//! Each is an enum of the names lifeboat acts on, with an `Other(String)`
//! case for the rest of the world (as bootc's `PartitionType::Unknown`). It
//! is written to JSON as the plain name, exactly as the string it replaces,
//! so layout and plan files stay byte-for-byte what they were. Build one
//! with `From<&str>` (never `Other("ext4")` by hand: a known name always maps
//! to its own case); compare with `==` against a `&str` where a name is
//! only tested once.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum of known names plus `Other(String)`, serialized as its name.
macro_rules! open_set {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $var:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $var, )*
            /// A name this version of lifeboat does not act on, kept as read.
            Other(String),
        }

        impl $name {
            /// The name as the tools spell it (and the JSON holds it).
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$var => $text, )*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => Self::$var, )*
                    _ => Self::Other(s.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self::from(s.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::from(String::deserialize(d)?))
            }
        }

        string_schema!($name);
    };
}

/// `$t` is a string in the JSON Schema, as the field was before it had a
/// type (docs/layout.schema.json stays the same).
macro_rules! string_schema {
    ($t:ty) => {
        impl schemars::JsonSchema for $t {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                String::schema_name()
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                String::json_schema(generator)
            }
        }
    };
}
pub(crate) use string_schema;

open_set! {
    /// A file system type as blkid and the kernel name it.
    pub enum FsType {
        Ext2 = "ext2",
        Ext3 = "ext3",
        Ext4 = "ext4",
        Xfs = "xfs",
        Vfat = "vfat",
        Btrfs = "btrfs",
        Swap = "swap",
        Zfs = "zfs",
    }
}

impl FsType {
    /// ext2, ext3 or ext4 (one mkfs family, one set of parameters).
    pub fn is_ext(&self) -> bool {
        matches!(self, FsType::Ext2 | FsType::Ext3 | FsType::Ext4)
    }
}

open_set! {
    /// An LVM segment type as `lvs -o segtype` prints it.
    pub enum SegType {
        Linear = "linear",
        Striped = "striped",
        Mirror = "mirror",
        Raid0 = "raid0",
        Raid1 = "raid1",
        Raid4 = "raid4",
        Raid5 = "raid5",
        Raid6 = "raid6",
        Raid10 = "raid10",
        ThinPool = "thin-pool",
        Thin = "thin",
        CachePool = "cache-pool",
        Cache = "cache",
    }
}

open_set! {
    /// A GRUB platform (the folder name under /boot/grub).
    pub enum GrubPlatform {
        I386Pc = "i386-pc",
        X86_64Efi = "x86_64-efi",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_map_to_their_case_and_back() {
        for name in [
            "ext2", "ext3", "ext4", "xfs", "vfat", "btrfs", "swap", "zfs",
        ] {
            let t = FsType::from(name);
            assert!(!matches!(t, FsType::Other(_)), "{name}");
            assert_eq!(t.as_str(), name);
        }
        assert_eq!(SegType::from("thin-pool"), SegType::ThinPool);
        assert_eq!(GrubPlatform::from("i386-pc"), GrubPlatform::I386Pc);
    }

    #[test]
    fn unknown_names_are_kept_as_read() {
        let t = FsType::from("reiserfs");
        assert_eq!(t, FsType::Other("reiserfs".into()));
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"reiserfs\"");
        let back: SegType = serde_json::from_str("\"vdo\"").unwrap();
        assert_eq!(back, SegType::Other("vdo".into()));
    }

    #[test]
    fn json_is_the_plain_name() {
        assert_eq!(serde_json::to_string(&FsType::Vfat).unwrap(), "\"vfat\"");
        let t: FsType = serde_json::from_str("\"xfs\"").unwrap();
        assert_eq!(t, FsType::Xfs);
        assert_eq!(
            serde_json::to_string(&GrubPlatform::X86_64Efi).unwrap(),
            "\"x86_64-efi\""
        );
        assert!(FsType::Ext3.is_ext() && !FsType::Xfs.is_ext());
        assert!(FsType::Btrfs == "btrfs");
    }
}
