//! The rescue image: a bootable system built from the host's kernel, modules
//! and tools, plus lifeboat itself and (optionally) the layout.

mod build;
pub mod cmdline;
pub mod contents;
pub mod copy;
pub mod elf;
pub mod inputs;
pub mod iso;
pub mod kernel;
pub mod media;
pub mod net;
pub mod pxe;
pub mod python;
pub mod secureboot;
pub mod ssh;
pub mod tree;
pub mod usb;
pub mod usbkeep;

pub use build::{
    mkrescue, sha256_file, BuildRecord, Compression, Options, BUILD_RECORD, DEFAULT_OUTPUT, INITRD,
    ISO, ISO_BACKUP_DIR, VMLINUZ,
};
pub use inputs::ImageInputs;
