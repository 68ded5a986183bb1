//! `lifeboat mkrescue`: assembles the rescue system and writes vmlinuz,
//! initrd and the hybrid ISO.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::contents::{self, LVM_COMMANDS};
use super::elf::LibResolver;
use super::inputs::ImageInputs;
use super::iso::{self, BootMenu, IsoInputs};
use super::kernel::{self, Kernel, ModuleIndex};
use super::secureboot::{self, SecureBootRecord};
use super::tree::{image_path, Tree};
use crate::exec::{self, Cmd};
use crate::layout::Layout;
use crate::util::{self, AtomicFile};

/// Default output folder.
pub const DEFAULT_OUTPUT: &str = "/var/lib/lifeboat/rescue";
/// File names inside the output folder.
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRD: &str = "initrd";
pub const ISO: &str = "lifeboat-rescue.iso";
/// Record of the last build, read by `lifeboat status`.
pub const BUILD_RECORD: &str = "rescue.json";

/// Arguments every boot entry passes: VGA and serial console (the last one
/// listed becomes /dev/console).
pub const BASE_CMDLINE: &str = "console=tty0 console=ttyS0,115200n8 panic=10";

/// zstd level of the initrd. On the 88 MB cpio of a Debian 12 host (2
/// threads): level 9 takes 1.9 s for 25.4 MB, level 15 13.2 s for 25.1 MB,
/// level 19 56 s for 22.4 MB (docs/PERFORMANCE.md).
const ZSTD_LEVEL: i32 = 9;
/// zstd level of `--compression zstd-small`: about 3.6 MB less than level 9
/// on that cpio (enough for the Secure Boot ISO to stay under 40 MB), at
/// 30-45 s per build on two cores instead of 2 s.
const ZSTD_SMALL_LEVEL: i32 = 19;
/// log2 of the zstd window (the size of the uncompressed cpio, rounded up).
const ZSTD_WINDOW_LOG: u32 = 27;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// zstd level 9: a build in seconds.
    Zstd,
    /// zstd level 19: the smallest image, 30-45 s per build on two cores.
    ZstdSmall,
    Gzip,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub kernel: Option<PathBuf>,
    pub output: PathBuf,
    pub layout: Option<PathBuf>,
    pub compression: Compression,
    /// Extra kernel arguments for every boot entry.
    pub append: Vec<String>,
    /// Extra programs to ship (names or paths).
    pub add_programs: Vec<String>,
    /// Build only vmlinuz and initrd (PXE).
    pub no_iso: bool,
    /// A backup folder whose newest generation (with its chain) goes onto
    /// the ISO, for recovery without a network or a second disk.
    pub include_backup: Option<PathBuf>,
    /// Copy the LUKS header backups named in the layout into the image
    /// (`--include-luks-headers`). A header backup opens its volume with
    /// any passphrase that was valid when it was taken, so by default they
    /// stay out of an image that PXE serves or a USB stick carries.
    pub include_luks_headers: bool,
    /// Where kernels, modules and firmware are looked up (tests point these
    /// elsewhere).
    pub boot_dir: PathBuf,
    pub modules_root: PathBuf,
    pub firmware_dir: PathBuf,
    /// The backup generation the image belongs with (recorded only).
    pub backup_generation: Option<String>,
    /// Without `layout`, capture the running system to learn which storage
    /// tools it needs; `None` (or a failed capture): require all of them.
    pub capture: Option<crate::layout::CaptureOptions>,
    /// Ship the host's CA certificates (a restic destination over HTTPS).
    pub ca_certificates: bool,
    /// Public keys for root over SSH (`rescue.ssh_authorized_keys`): puts
    /// an SSH server into the image, started by `lifeboat.ssh`.
    pub ssh_authorized_keys: Option<PathBuf>,
    /// Which SSH server (`rescue.ssh_server`).
    pub ssh_server: super::ssh::SshServerChoice,
    /// Where the signed shim and GRUB are looked up (`--secure-boot-root`;
    /// `None`: `/`).
    pub secure_boot_root: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            kernel: None,
            output: PathBuf::from(DEFAULT_OUTPUT),
            layout: None,
            compression: Compression::Zstd,
            append: Vec::new(),
            add_programs: Vec::new(),
            no_iso: false,
            include_backup: None,
            include_luks_headers: false,
            boot_dir: PathBuf::from("/boot"),
            modules_root: PathBuf::from("/lib/modules"),
            firmware_dir: PathBuf::from("/lib/firmware"),
            backup_generation: None,
            capture: None,
            ca_certificates: false,
            ssh_authorized_keys: None,
            ssh_server: super::ssh::SshServerChoice::Auto,
            secure_boot_root: None,
        }
    }
}

/// What a build produced; also written as `rescue.json` beside the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildRecord {
    pub lifeboat_version: String,
    pub built_at: String,
    pub kernel_version: String,
    pub kernel_image: String,
    pub compression: Compression,
    pub cmdline: String,
    /// The layout built in, with the SHA-256 of its file.
    pub layout: Option<String>,
    pub layout_sha256: Option<String>,
    pub files: Vec<BuiltFile>,
    pub modules: usize,
    pub firmware_files: usize,
    pub programs: usize,
    pub libraries: usize,
    pub build_seconds: f64,
    /// What the image was built from, and their SHA-256 (none in records
    /// of older versions).
    #[serde(default)]
    pub inputs: Option<ImageInputs>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The backup generation the image belongs with: the newest when it
    /// was built, updated by scheduled runs that find the image current.
    #[serde(default)]
    pub backup: Option<String>,
    /// Whether the ISO boots with Secure Boot on, and why not (none
    /// without an ISO and in records of older versions).
    #[serde(default)]
    pub secure_boot: Option<SecureBootRecord>,
    /// The USB disks and PXE trees written from this folder's images
    /// (src/rescue/media.rs), kept across rebuilds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<super::media::MediaOutput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

impl BuildRecord {
    pub fn load(output: &Path) -> Result<BuildRecord> {
        let path = output.join(BUILD_RECORD);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `rescue.json` into `output` (atomically).
    pub fn save(&self, output: &Path) -> Result<()> {
        util::write_atomic(
            &output.join(BUILD_RECORD),
            format!("{}\n", serde_json::to_string_pretty(self)?).as_bytes(),
            0o644,
        )
    }
}

/// The kernel command line of every boot entry: the base and `append`.
pub(super) fn cmdline(opts: &Options) -> String {
    std::iter::once(BASE_CMDLINE.to_string())
        .chain(opts.append.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the rescue image.
pub fn mkrescue(opts: &Options) -> Result<BuildRecord> {
    let started = Instant::now();
    util::ensure_writable_dir(&opts.output)?;
    let layout = match &opts.layout {
        Some(p) => Some(Layout::load(p)?),
        None => None,
    };
    let programs = program_plan(opts, layout.as_ref())?;
    let loaders = secureboot::find_loaders(&opts.secure_boot_root());
    let (iso_inputs, grafts) = iso_setup(opts, &loaders)?;
    let cmdline = cmdline(opts);
    if !opts.no_iso {
        iso::check_grub_args(&cmdline)?;
    }
    let kernel = kernel::find_kernel(opts.kernel.as_deref(), &opts.boot_dir, &opts.modules_root)?;
    log::info!("kernel {} from {}", kernel.version, kernel.image.display());
    let inputs = ImageInputs::with_kernel(opts, &kernel)?;
    let staging = tempfile::Builder::new()
        .prefix(".mkrescue-")
        .tempdir_in(&opts.output)
        .with_context(|| format!("creating a work folder in {}", opts.output.display()))?;

    let mut tree = Tree::new();
    let (modules, firmware) =
        add_modules(&mut tree, &kernel, layout.as_ref(), opts, staging.path())?;
    let secure_boot = match iso_inputs {
        Some(_) => Some(secure_boot_record(&loaders, &kernel, staging.path())?),
        None => None,
    };
    let (program_names, libraries) =
        add_programs(&mut tree, &programs.required, &programs.optional)?;
    add_system_files(&mut tree, layout.as_ref(), opts)?;
    super::net::add_files(&mut tree);
    if let Some((server, keys)) = &programs.ssh {
        super::ssh::add_files(&mut tree, *server, keys);
    }
    let record_in_image = serde_json::json!({
        "lifeboat_version": crate::VERSION,
        "kernel_version": kernel.version,
        "cmdline": cmdline,
        "modules": modules,
        "programs": program_names,
    });
    tree.bytes(
        "etc/lifeboat/rescue.json",
        format!("{}\n", serde_json::to_string_pretty(&record_in_image)?),
        0o644,
    );
    let iso = iso_inputs.as_ref().map(|i| (i, grafts, cmdline.as_str()));
    let files = write_outputs(opts, &tree, &kernel, iso, staging.path())?;

    let record = BuildRecord {
        lifeboat_version: crate::VERSION.to_string(),
        built_at: util::rfc3339(util::now_epoch()),
        kernel_version: kernel.version.clone(),
        kernel_image: kernel.image.display().to_string(),
        compression: opts.compression,
        cmdline,
        layout: opts.layout.as_ref().map(|p| {
            std::path::absolute(p)
                .unwrap_or(p.clone())
                .display()
                .to_string()
        }),
        layout_sha256: inputs.layout_sha256.clone(),
        files,
        modules: modules.len(),
        firmware_files: firmware,
        programs: program_names.len(),
        libraries,
        build_seconds: started.elapsed().as_secs_f64(),
        fingerprint: Some(inputs.fingerprint()),
        inputs: Some(inputs),
        backup: opts.backup_generation.clone(),
        secure_boot,
        // The media still hold what they held: status compares them.
        media: BuildRecord::load(&opts.output)
            .map(|r| r.media)
            .unwrap_or_default(),
    };
    record.save(&opts.output)?;
    Ok(record)
}

/// The programs an image gets: required (the layout's tools, checked up
/// front; `--add-program`; the network's; the SSH server's) and optional.
struct ProgramPlan {
    required: Vec<String>,
    optional: Vec<String>,
    ssh: Option<(super::ssh::SshServer, String)>,
}

fn program_plan(opts: &Options, layout: Option<&Layout>) -> Result<ProgramPlan> {
    let (needs, needs_from) = tools_layout(layout, opts);
    let (mut required, mut optional) = contents::program_lists(needs.as_ref());
    let mut tools = vec!["busybox", "depmod", "modinfo"];
    if !opts.no_iso {
        tools.extend(iso::TOOLS);
    }
    tools.extend(required.iter().map(String::as_str));
    exec::require(&tools).with_context(|| format!("building a rescue image for {needs_from}"))?;
    // --add-program: anything, checked when it is added.
    required.extend(opts.add_programs.iter().cloned());
    required.extend(super::net::programs(layout));
    let ssh = ssh_setup(opts)?;
    if let Some((server, _)) = &ssh {
        let (req, opt) = server.programs();
        required.extend(req);
        optional.extend(opt);
    }
    Ok(ProgramPlan {
        required,
        optional,
        ssh,
    })
}

/// A host path put on the ISO at a path of its own (`--include-backup`).
type Graft = (PathBuf, String);

/// What the ISO is made of (none with `--no-iso`) and the backup grafted
/// onto it (`--include-backup`).
fn iso_setup(
    opts: &Options,
    loaders: &Result<secureboot::SignedLoaders, secureboot::NotCapable>,
) -> Result<(Option<IsoInputs>, Vec<Graft>)> {
    let iso_inputs = if opts.no_iso {
        None
    } else {
        let mut found = IsoInputs::find()?;
        found.signed = loaders.as_ref().ok().cloned();
        Some(found)
    };
    let grafts = match &opts.include_backup {
        Some(_) if opts.no_iso => {
            bail!("--include-backup puts the backup on the ISO: it cannot go with --no-iso")
        }
        Some(dir) => backup_grafts(dir)?,
        None => Vec::new(),
    };
    Ok((iso_inputs, grafts))
}

/// The initrd, the kernel and the ISO (`iso`: its inputs, grafts and
/// command line) written under temporary names first and renamed at the
/// end, so that the final names always hold a complete image of one build.
fn write_outputs(
    opts: &Options,
    tree: &Tree,
    kernel: &Kernel,
    iso: Option<(&IsoInputs, Vec<Graft>, &str)>,
    staging: &Path,
) -> Result<Vec<BuiltFile>> {
    let initrd_path = opts.output.join(INITRD);
    let mut initrd = AtomicFile::create(&initrd_path, 0o600)?;
    write_initrd(tree, opts.compression, &mut initrd)
        .with_context(|| format!("writing {}", initrd.tmp_path().display()))?;
    let vmlinuz_path = opts.output.join(VMLINUZ);
    let mut vmlinuz = AtomicFile::create(&vmlinuz_path, 0o644)?;
    std::io::copy(
        &mut std::fs::File::open(&kernel.image)
            .with_context(|| format!("opening {}", kernel.image.display()))?,
        &mut vmlinuz,
    )
    .with_context(|| format!("copying {}", kernel.image.display()))?;
    vmlinuz.flush()?;
    let iso_tmp = match iso {
        Some((inputs, grafts, cmdline)) => Some(write_iso(
            inputs,
            grafts,
            cmdline,
            (vmlinuz.tmp_path(), initrd.tmp_path()),
            staging,
        )?),
        None => None,
    };
    let mut files = vec![
        built_file(VMLINUZ, vmlinuz.tmp_path())?,
        built_file(INITRD, initrd.tmp_path())?,
    ];
    if let Some(tmp) = &iso_tmp {
        files.push(built_file(ISO, tmp)?);
    }
    vmlinuz.commit()?;
    initrd.commit()?;
    let iso_path = opts.output.join(ISO);
    if let Some(tmp) = iso_tmp {
        std::fs::rename(&tmp, &iso_path)
            .with_context(|| format!("renaming the ISO to {}", iso_path.display()))?;
    } else if iso_path.exists() {
        // An ISO from an earlier build would not match this initrd.
        std::fs::remove_file(&iso_path)
            .with_context(|| format!("removing the stale {}", iso_path.display()))?;
    }
    util::sync_dir(&opts.output)?;
    Ok(files)
}

/// The ISO in the private work folder (xorriso creates the file itself:
/// never under a name others could plant a link at), synced, mode 0600.
fn write_iso(
    inputs: &IsoInputs,
    grafts: Vec<Graft>,
    cmdline: &str,
    (vmlinuz, initrd): (&Path, &Path),
    staging: &Path,
) -> Result<PathBuf> {
    let tmp = staging.join(ISO);
    let initrd_sha = sha256_file(initrd)?;
    let menu = BootMenu {
        grafts,
        cmdline: cmdline.to_string(),
        marker: format!("id-{}", &initrd_sha[..16]),
    };
    iso::build_iso(inputs, &menu, vmlinuz, initrd, staging, &tmp)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    Ok(tmp)
}

/// The SSH server and the checked keys when `ssh_authorized_keys` is set.
fn ssh_setup(opts: &Options) -> Result<Option<(super::ssh::SshServer, String)>> {
    let Some(path) = &opts.ssh_authorized_keys else {
        return Ok(None);
    };
    let (keys, parsed) = super::ssh::read_authorized_keys(path)?;
    let server = super::ssh::SshServer::on_host(opts.ssh_server)?;
    log::info!(
        "SSH into the rescue: {} with {} key(s) for root, started by lifeboat.ssh",
        server.name(),
        parsed.len()
    );
    Ok(Some((server, keys)))
}

/// Whether the ISO boots with Secure Boot on: the signed loaders found,
/// the kernel signed, and the modules (staged by [`add_modules`] in
/// `staging`) signed.
fn secure_boot_record(
    loaders: &Result<secureboot::SignedLoaders, secureboot::NotCapable>,
    kernel: &Kernel,
    staging: &Path,
) -> Result<SecureBootRecord> {
    let signed = secureboot::pe_signed(&kernel.image).unwrap_or(false);
    let modules = staging.join("modroot/lib/modules").join(&kernel.version);
    let unsigned = secureboot::unsigned_modules(&modules)?;
    let record = secureboot::decide(loaders, &kernel.image, signed, unsigned);
    if signed && !record.unsigned_modules.is_empty() {
        log::warn!(
            "{} module(s) of the image are not signed: with Secure Boot on the kernel refuses them ({})",
            record.unsigned_modules.len(),
            record.unsigned_modules.join(", ")
        );
    }
    log::info!("{}", record.summary());
    Ok(record)
}

impl Options {
    /// The root the signed loaders are looked up in.
    pub fn secure_boot_root(&self) -> PathBuf {
        self.secure_boot_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"))
    }
}

/// Where an included backup goes on the ISO (the rescue finds it there).
pub const ISO_BACKUP_DIR: &str = "backup";

/// The generation folders of the newest backup chain in `dir`, as grafts
/// into the ISO's backup folder.
fn backup_grafts(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let store = crate::backup::Store::new(dir);
    let newest = store
        .pick(None)
        .with_context(|| format!("--include-backup {}", dir.display()))?;
    if newest.encryption.is_some() {
        // The image never holds the identity: the chain goes on as stored
        // (its clear generation.json names it) and recovery asks for the key.
        log::info!(
            "including encrypted backup generation {} ({} generations in its chain) on the ISO; its identity is not included: give it at recovery (--identity, the job disk or the prompt)",
            newest.id,
            newest.chain.len()
        );
        return Ok(newest
            .chain
            .iter()
            .map(|id| (store.gen_dir(id), format!("{ISO_BACKUP_DIR}/{id}")))
            .collect());
    }
    let (newest, _, chain) = crate::backup::restore::load_chain(&store, None)
        .with_context(|| format!("--include-backup {}", dir.display()))?;
    log::info!(
        "including backup generation {} ({} generations in its chain) on the ISO",
        newest.id,
        chain.len()
    );
    Ok(chain
        .iter()
        .map(|g| (store.gen_dir(&g.id), format!("{ISO_BACKUP_DIR}/{}", g.id)))
        .collect())
}

fn built_file(name: &str, path: &Path) -> Result<BuiltFile> {
    Ok(BuiltFile {
        name: name.to_string(),
        bytes: std::fs::metadata(path)?.len(),
        sha256: sha256_file(path)?,
    })
}

pub use crate::util::sha256_file;

/// The archive's mtime: `SOURCE_DATE_EPOCH` when set, else 0, so that two
/// builds from the same inputs give the same bytes.
fn archive_mtime() -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

fn write_initrd(tree: &Tree, compression: Compression, out: &mut AtomicFile) -> Result<()> {
    let mtime = archive_mtime()?;
    let buffered = BufWriter::with_capacity(1 << 20, out.file());
    match compression {
        Compression::Zstd | Compression::ZstdSmall => {
            let level = match compression {
                Compression::ZstdSmall => ZSTD_SMALL_LEVEL,
                _ => ZSTD_LEVEL,
            };
            let mut enc = zstd::stream::Encoder::new(buffered, level)?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            enc.multithread(threads)?;
            enc.include_checksum(true)?;
            // A 128 MiB window with long-distance matching: 0.5 MB less on
            // the 95 MB cpio at no cost in time (the kernel's unzstd takes
            // windows up to 2 GiB; docs/PERFORMANCE.md).
            enc.window_log(ZSTD_WINDOW_LOG)?;
            enc.long_distance_matching(true)?;
            let enc = tree.write_cpio(enc, mtime)?;
            enc.finish()?.flush()?;
        }
        Compression::Gzip => {
            let mut header = flate2::GzBuilder::new().mtime(mtime);
            header = header.operating_system(3);
            let enc = header.write(buffered, flate2::Compression::best());
            let enc = tree.write_cpio(enc, mtime)?;
            enc.finish()?.flush()?;
        }
    }
    Ok(())
}

/// Adds the kernel modules (closed over modules.dep, indexed by depmod) and
/// the firmware they ask for. Returns the module names and firmware count.
fn add_modules(
    tree: &mut Tree,
    kernel: &Kernel,
    layout: Option<&Layout>,
    opts: &Options,
    staging: &Path,
) -> Result<(Vec<String>, usize)> {
    let index = ModuleIndex::load(&kernel.modules_dir)?;
    let (required, optional) = module_names(layout);
    let set = index.closure(&required, &optional)?;
    if !set.absent.is_empty() {
        log::debug!(
            "modules not in kernel {}: {}",
            kernel.version,
            set.absent.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let moddir = index_modules(kernel, &set.files, staging)?;
    add_dir_recursive(
        tree,
        &moddir,
        &format!("usr/lib/modules/{}", kernel.version),
    )?;
    let firmware = add_firmware(tree, kernel, &set.files, opts)?;
    let load: Vec<&str> = contents::LOAD_AT_BOOT
        .iter()
        .copied()
        .filter(|m| set.files.contains_key(*m))
        .collect();
    tree.bytes("etc/lifeboat/modules.load", load.join("\n") + "\n", 0o644);
    Ok((set.files.keys().cloned().collect(), firmware))
}

/// The modules every image needs, and those it takes when the kernel has
/// them: the layout's storage and the drivers of its disks.
fn module_names(layout: Option<&Layout>) -> (Vec<String>, Vec<String>) {
    let mut required: Vec<String> = contents::REQUIRED_MODULES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut optional: Vec<String> = contents::OPTIONAL_MODULES
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(l) = layout {
        let (req, opt) = contents::layout_modules(l);
        required.extend(req);
        optional.extend(opt);
        optional.extend(contents::disk_driver_modules(Path::new("/sys"), l));
    }
    (required, optional)
}

/// The chosen modules (name -> path in the modules folder) copied into a
/// tree of their own below `staging` and indexed there by depmod; returns
/// that tree's modules folder.
fn index_modules(
    kernel: &Kernel,
    files: &BTreeMap<String, String>,
    staging: &Path,
) -> Result<PathBuf> {
    let base = staging.join("modroot");
    let moddir = base.join("lib/modules").join(&kernel.version);
    for rel in files.values() {
        let dest = moddir.join(rel);
        std::fs::create_dir_all(dest.parent().expect("module path has a parent"))?;
        std::fs::copy(kernel.modules_dir.join(rel), &dest)
            .with_context(|| format!("copying module {rel}"))?;
    }
    let shipped: BTreeSet<&str> = files.values().map(String::as_str).collect();
    let order =
        std::fs::read_to_string(kernel.modules_dir.join("modules.order")).unwrap_or_default();
    let order: String = order
        .lines()
        .filter(|l| shipped.contains(l) || shipped.iter().any(|s| s.starts_with(&format!("{l}."))))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(moddir.join("modules.order"), order)?;
    for f in ["modules.builtin", "modules.builtin.modinfo"] {
        let src = kernel.modules_dir.join(f);
        if src.exists() {
            std::fs::copy(&src, moddir.join(f))?;
        }
    }
    Cmd::new("depmod")
        .arg("-b")
        .arg(&base)
        .arg(&kernel.version)
        .run()
        .context("indexing the rescue image's modules with depmod")?;
    Ok(moddir)
}

/// The firmware files the chosen modules ask for (modinfo), as far as the
/// host has them. Returns how many.
fn add_firmware(
    tree: &mut Tree,
    kernel: &Kernel,
    files: &BTreeMap<String, String>,
    opts: &Options,
) -> Result<usize> {
    if files.is_empty() {
        return Ok(0);
    }
    let paths: Vec<PathBuf> = files.values().map(|r| kernel.modules_dir.join(r)).collect();
    let names = Cmd::new("modinfo")
        .args(["-F", "firmware"])
        .args(&paths)
        .read()?;
    let mut wanted: BTreeSet<&str> = names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    wanted.retain(|n| !n.contains(".."));
    let mut firmware = 0;
    for name in wanted {
        let mut found = false;
        for suffix in ["", ".xz", ".zst"] {
            let src = opts.firmware_dir.join(format!("{name}{suffix}"));
            if src.is_file() {
                tree.host_file_at(&src, &format!("usr/lib/firmware/{name}{suffix}"))?;
                firmware += 1;
                found = true;
            }
        }
        if !found {
            log::debug!("firmware {name} is not installed on this host");
        }
    }
    Ok(firmware)
}

fn add_dir_recursive(tree: &mut Tree, host: &Path, dest: &str) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(host)
        .with_context(|| format!("reading {}", host.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    tree.dir(dest, 0o755);
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let target = format!("{dest}/{name}");
        if e.file_type()?.is_dir() {
            add_dir_recursive(tree, &path, &target)?;
        } else {
            tree.host_file_at(&path, &target)?;
        }
    }
    Ok(())
}

/// The layout that decides which tools are required, and what it is for
/// messages: the one built in, else a capture of the running system (when
/// `opts.capture` allows), else none (every storage tool is required).
fn tools_layout(built_in: Option<&Layout>, opts: &Options) -> (Option<Layout>, String) {
    if let (Some(l), Some(p)) = (built_in, &opts.layout) {
        return (Some(l.clone()), format!("the layout {}", p.display()));
    }
    let Some(capture) = &opts.capture else {
        return (None, "an unknown layout (every storage tool)".into());
    };
    match crate::layout::capture(capture) {
        Ok(l) => (Some(l), "this system's layout".into()),
        Err(e) => {
            // Quiet: the image then holds every storage tool, a superset.
            log::info!("cannot capture this system's layout: {e:#}");
            let why = format!(
                "an unknown layout (every storage tool; capturing this system failed: {e:#})"
            );
            (None, why)
        }
    }
}

/// Adds busybox with its applets, the recovery tools (`required`: a missing
/// one is an error; `optional`: when the host has them), lifeboat itself
/// and their libraries. Returns the program names and the library count.
fn add_programs(
    tree: &mut Tree,
    required: &[String],
    optional: &[String],
) -> Result<(Vec<String>, usize)> {
    let (mut elf_files, mut names, mut real_names) = add_named(tree, required, optional)?;
    lvm_links(tree, &mut real_names);
    // lifeboat itself.
    let me = std::env::current_exe().context("finding lifeboat's own executable")?;
    tree.host_file_at(&me, "usr/bin/lifeboat")?;
    elf_files.push(me);
    names.push("lifeboat".into());
    real_names.insert("lifeboat".into());
    add_busybox(tree, &real_names)?;
    let libraries = add_libraries(tree, &elf_files)?;
    names.sort();
    names.dedup();
    Ok((names, libraries))
}

/// The named programs found on the host (a required one missing is an
/// error naming its package): the ELF files to read, the names shown, and
/// the real programs' names (no busybox applet shadows them).
fn add_named(
    tree: &mut Tree,
    required: &[String],
    optional: &[String],
) -> Result<(Vec<PathBuf>, Vec<String>, BTreeSet<String>)> {
    let mut elf_files: Vec<PathBuf> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut real_names: BTreeSet<String> = BTreeSet::new();
    let wanted = required
        .iter()
        .map(|p| (p.clone(), true))
        .chain(optional.iter().map(|p| (p.clone(), false)));
    for (name, required) in wanted {
        let Some(host) = exec::which(&name) else {
            if required {
                bail!(
                    "{name} is not installed; install package {} or leave it out",
                    exec::package_of(&name)
                );
            }
            continue;
        };
        let dest = tree.host_path(&host)?;
        log::debug!("program {name}: {} as /{dest}", host.display());
        if name == "borg" {
            elf_files.extend(super::python::add_borg(tree, &host)?);
        }
        elf_files.push(
            std::fs::canonicalize(&host)
                .with_context(|| format!("resolving {}", host.display()))?,
        );
        let base = host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(name.clone());
        real_names.insert(base.clone());
        names.push(base);
    }
    Ok((elf_files, names, real_names))
}

/// The LVM commands as links to `lvm`, beside it, when it is in the tree.
fn lvm_links(tree: &mut Tree, real_names: &mut BTreeSet<String>) {
    let Some(lvm) = tree
        .paths()
        .find(|p| p.ends_with("/lvm"))
        .map(str::to_string)
    else {
        return;
    };
    let dir = lvm
        .rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default();
    for cmd in LVM_COMMANDS {
        let path = format!("{dir}/{cmd}");
        if !tree.contains(&path) {
            tree.symlink(&path, "lvm");
            real_names.insert(cmd.to_string());
        }
    }
}

/// Busybox (static) and the applets that no real tool replaces; aliases
/// make the real tools win over busybox's built-in applets at the prompt.
fn add_busybox(tree: &mut Tree, real_names: &BTreeSet<String>) -> Result<()> {
    let busybox = exec::which("busybox").context("busybox is not installed")?;
    if super::elf::read_deps(&busybox)?.is_some_and(|d| !d.needed.is_empty()) {
        bail!(
            "{} is not statically linked; install package busybox-static",
            busybox.display()
        );
    }
    tree.host_file_at(&busybox, "usr/bin/busybox")?;
    let list = Cmd::new(busybox.to_string_lossy())
        .arg("--list-full")
        .read()?;
    let mut shadowed = Vec::new();
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let dest = image_path(Path::new(&format!("/{applet}")));
        let base = dest.rsplit('/').next().unwrap_or(&dest).to_string();
        if real_names.contains(&base) {
            shadowed.push(base);
            continue;
        }
        if tree.contains(&dest) || base == "busybox" {
            continue;
        }
        let depth = dest.matches('/').count();
        tree.symlink(&dest, &format!("{}usr/bin/busybox", "../".repeat(depth)));
    }
    // Busybox's shell runs its own applets before PATH: aliases make the real
    // tools win at the rescue prompt and in job scripts.
    shadowed.sort();
    shadowed.dedup();
    let mut aliases = String::from("# Real tools instead of busybox applets of the same name.\n");
    for name in &shadowed {
        if let Some(path) = tree.paths().find(|p| {
            (p.starts_with("usr/sbin/") || p.starts_with("usr/bin/"))
                && p.rsplit('/').next() == Some(name)
        }) {
            aliases.push_str(&format!("alias {name}=/{path}\n"));
        }
    }
    tree.bytes("etc/lifeboat/tools.sh", aliases, 0o644);
    Ok(())
}

/// The shared libraries of `elf_files` (and the dlopen()ed ones), found by
/// reading the ELF files; folders outside the loader's defaults go into
/// LD_LIBRARY_PATH (etc/lifeboat/env.sh). Returns how many.
fn add_libraries(tree: &mut Tree, elf_files: &[PathBuf]) -> Result<usize> {
    let resolver = LibResolver::host();
    let mut libs = resolver.closure(elf_files)?;
    for name in contents::DLOPEN_LIBRARIES {
        if let Some(lib) = resolver.find(name) {
            libs.extend(resolver.closure(std::slice::from_ref(&lib))?);
            libs.insert(lib);
        }
    }
    let mut extra_dirs: BTreeSet<String> = BTreeSet::new();
    let defaults = ["usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib"];
    for lib in &libs {
        let dest = tree.host_path(lib)?;
        let dir = dest
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        if !defaults.contains(&dir.as_str()) {
            extra_dirs.insert(format!("/{dir}"));
        }
    }
    let mut env = String::from("# Set by lifeboat mkrescue.\n");
    if !extra_dirs.is_empty() {
        env.push_str(&format!(
            "export LD_LIBRARY_PATH={}\n",
            extra_dirs.into_iter().collect::<Vec<_>>().join(":")
        ));
    }
    tree.bytes("etc/lifeboat/env.sh", env, 0o644);
    Ok(libs.len())
}

const INIT: &str = include_str!("../../initramfs/init");
const PROFILE: &str = include_str!("../../initramfs/profile");
const MOTD: &str = include_str!("../../initramfs/motd");
const UDHCPC: &str = include_str!("../../initramfs/udhcpc.script");
const LVM_CONF: &str = include_str!("../../initramfs/lvm.conf");
const MDEV_CONF: &str = include_str!("../../initramfs/mdev.conf");

/// The rescue system's lvm.conf. Without thin_check (cache_check) LVM
/// refuses to activate a thin (cache) pool, so where the host has no such
/// tool to ship, the rescue system activates pools without the check.
fn lvm_conf([thin_check, cache_check]: [bool; 2]) -> String {
    let mut skip = String::new();
    if !thin_check {
        skip.push_str("    thin_check_executable = \"\"\n");
    }
    if !cache_check {
        skip.push_str("    cache_check_executable = \"\"\n");
    }
    LVM_CONF.replace("global {\n", &format!("global {{\n{skip}"))
}

/// The TLS roots restic reads (Go's default bundle path on Debian).
const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

fn add_system_files(tree: &mut Tree, layout: Option<&Layout>, opts: &Options) -> Result<()> {
    tree.bytes("init", INIT, 0o755);
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "root",
        "mnt",
        "var/lib/lifeboat",
        "var/log",
    ] {
        tree.dir(d, 0o755);
    }
    tree.dir("tmp", 0o1777);
    tree.symlink("var/tmp", "../tmp");
    tree.char_device("dev/console", 0o600, 5, 1);
    tree.char_device("dev/null", 0o666, 1, 3);
    tree.bytes("etc/profile", PROFILE, 0o644);
    tree.bytes("etc/motd", MOTD, 0o644);
    tree.bytes("etc/lifeboat/udhcpc.script", UDHCPC, 0o755);
    if opts.ca_certificates {
        let ca = Path::new(CA_CERTIFICATES);
        if ca.is_file() {
            tree.host_path(ca)?;
        } else {
            log::warn!("{CA_CERTIFICATES} is missing: the rescue system cannot check TLS servers (install ca-certificates)");
        }
    }
    let pool_checks = ["thin_check", "cache_check"].map(|t| exec::which(t).is_some());
    if let Some(layout) = layout {
        if layout.lvm.lvs.iter().any(|lv| lv.is_pool()) && !pool_checks[0] {
            log::warn!(
                "the layout has thin pools but thin_check is not installed: the rescue system \
                 activates them unchecked (install thin-provisioning-tools)"
            );
        }
    }
    tree.bytes("etc/lvm/lvm.conf", lvm_conf(pool_checks), 0o644);
    tree.bytes("etc/mdev.conf", MDEV_CONF, 0o644);
    tree.bytes("etc/hostname", "lifeboat-rescue\n", 0o644);
    // root without a password: the rescue console is for whoever holds the
    // machine; no hash of the host's passwords goes into the image.
    tree.bytes("etc/passwd", "root::0:0:root:/root:/bin/sh\n", 0o644);
    tree.bytes("etc/group", "root:x:0:\ntty:x:5:\ndisk:x:6:\n", 0o644);
    tree.bytes(
        "etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files dns\n",
        0o644,
    );
    tree.bytes(
        "etc/os-release",
        format!(
            "NAME=\"lifeboat rescue\"\nID=lifeboat-rescue\nVERSION_ID={v}\nPRETTY_NAME=\"lifeboat rescue {v}\"\n",
            v = crate::VERSION
        ),
        0o644,
    );
    for f in contents::HOST_FILES {
        let p = Path::new(f);
        if p.is_file() {
            tree.host_file_at(p, f)?;
        }
    }
    if let (Some(layout), Some(path)) = (layout, &opts.layout) {
        tree.host_file_at(path, "etc/lifeboat/layout.json")?;
        add_luks_headers(tree, layout, path, opts.include_luks_headers)?;
    }
    Ok(())
}

/// The LUKS header backups named in the layout, beside it, into
/// `/etc/lifeboat` of the image: only when asked, with a warning of what
/// that means.
fn add_luks_headers(tree: &mut Tree, layout: &Layout, path: &Path, include: bool) -> Result<()> {
    let names: Vec<&str> = layout
        .luks
        .iter()
        .filter_map(|l| l.header_backup.as_deref())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    if !include {
        log::info!(
            "{} LUKS header backup(s) named in the layout left out of the image; recovery \
             formats new LUKS containers unless they are beside the layout it is given \
             (or use --include-luks-headers)",
            names.len()
        );
        return Ok(());
    }
    log::warn!(
        "--include-luks-headers: the image holds {} LUKS header backup(s); anyone with the \
         image can open those volumes with any passphrase that was valid when the header \
         was backed up. Keep the image (ISO, initrd, PXE server) as secret as the disks",
        names.len()
    );
    let dir = path.parent().unwrap_or(Path::new("."));
    for name in names {
        let src = dir.join(name);
        if !src.is_file() {
            bail!(
                "LUKS header backup {} named in the layout is missing; run layout save --luks-headers again",
                src.display()
            );
        }
        tree.host_file_at(&src, &format!("etc/lifeboat/{name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initrd of `tree` written with `compression`, unpacked: (the
    /// compressed size, the cpio).
    fn initrd_of(tree: &Tree, compression: Compression) -> (u64, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd");
        let mut f = AtomicFile::create(&path, 0o600).unwrap();
        write_initrd(tree, compression, &mut f).unwrap();
        f.commit().unwrap();
        let packed = std::fs::read(&path).unwrap();
        let cpio = match compression {
            Compression::Gzip => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&packed[..]),
                    &mut out,
                )
                .unwrap();
                out
            }
            _ => zstd::stream::decode_all(&packed[..]).unwrap(),
        };
        (packed.len() as u64, cpio)
    }

    /// zstd-small writes the same cpio as zstd, in fewer bytes (level 19
    /// against 9 on text that rewards the effort); gzip the same cpio too.
    #[test]
    fn zstd_small_is_the_same_cpio_in_fewer_bytes() {
        let mut tree = Tree::new();
        let text: String = (0..40_000u32)
            .map(|i| format!("line {} of a config {}\n", i % 977, (i * 7919) % 1009))
            .collect();
        tree.bytes("etc/a.conf", text.clone(), 0o644);
        tree.bytes("etc/b.conf", text.replace("config", "setting"), 0o644);
        let (fast, cpio) = initrd_of(&tree, Compression::Zstd);
        let (small, cpio_small) = initrd_of(&tree, Compression::ZstdSmall);
        let (_, cpio_gzip) = initrd_of(&tree, Compression::Gzip);
        assert_eq!(cpio, cpio_small);
        assert_eq!(cpio, cpio_gzip);
        assert!(small < fast, "zstd-small {small} bytes, zstd {fast}");
        // The names an admin types and rescue.json records.
        assert_eq!(
            serde_json::to_string(&[Compression::Zstd, Compression::ZstdSmall, Compression::Gzip])
                .unwrap(),
            r#"["zstd","zstd-small","gzip"]"#
        );
        assert_eq!(
            <Compression as clap::ValueEnum>::from_str("zstd-small", false),
            Ok(Compression::ZstdSmall)
        );
    }

    #[test]
    fn pools_are_checked_only_where_the_checker_ships() {
        let with = lvm_conf([true, true]);
        assert_eq!(with, LVM_CONF);
        let without = lvm_conf([false, true]);
        assert!(
            without
                .contains("global {\n    thin_check_executable = \"\"\n    event_activation = 0"),
            "{without}"
        );
        assert!(!without.contains("cache_check_executable"));
        // LVM itself accepts the result.
        if exec::which("lvm").is_some() {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("lvm.conf"), lvm_conf([false, false])).unwrap();
            let out = Cmd::new("lvm")
                .args([
                    "lvmconfig",
                    "--type",
                    "current",
                    "global/thin_check_executable",
                ])
                .env("LVM_SYSTEM_DIR", dir.path())
                .read()
                .unwrap();
            assert_eq!(out.trim(), "thin_check_executable=\"\"");
        }
    }
}
