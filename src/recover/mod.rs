//! `lifeboat recover`: applies a recovery plan. Shows the plan, asks for
//! confirmation, proves that every target disk is free, then runs the steps
//! in order, recording each one so that a re-run resumes after a failure.

pub mod boot;
pub mod disk;
pub mod fixup;
pub mod journal;
pub mod keys;
pub mod mkfs;
pub mod mount;
pub mod network;
pub mod prove;
pub mod restore;
pub mod safety;
pub mod storage;
pub mod verify;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::layout::{Layout, LuksDevice, PartitionTable};
use crate::plan::{self, mapping, render, Plan, PlanInput, Step, MOUNT_ROOT};
use crate::util;
use journal::{step_id, Journal};
pub use keys::Keys;

/// Where the rescue image carries the layout.
pub const RESCUE_LAYOUT: &str = "/etc/lifeboat/layout.json";
/// The job disk's mount point in the rescue system, and its answers file.
pub const JOB_DIR: &str = "/run/lifeboat/job";
pub const ANSWERS_FILE: &str = "recover.toml";
/// Where the rescue's init mounts its boot medium (the ISO).
pub const MEDIUM_DIR: &str = "/run/lifeboat/medium";

#[derive(Debug, Clone)]
pub struct Options {
    pub layout: Option<PathBuf>,
    pub backup: Option<String>,
    /// Identity of an encrypted backup (`--identity`).
    pub identity: Option<PathBuf>,
    pub maps: Vec<String>,
    /// `--map-nic OLD=NEW`.
    pub nic_maps: Vec<String>,
    /// `--firmware`.
    pub firmware: plan::firmware::FirmwareChoice,
    pub yes: bool,
    pub dry_run: bool,
    pub key_file: Option<PathBuf>,
    pub unattended: bool,
    pub answers: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub luks_iter_time_ms: Option<u32>,
    /// Accept loop devices as target disks (tests).
    pub allow_loop: bool,
    pub sys: PathBuf,
    /// Where the new system is mounted ([`MOUNT_ROOT`]).
    pub mount_root: PathBuf,
    /// Regenerate the initramfs even when it already fits the new disks.
    pub regenerate_initramfs: bool,
    /// Overwrite target disks that hold data this plan did not write.
    pub wipe: bool,
    /// Recreate the disks only, though a backup is given.
    pub no_restore: bool,
    /// A drill: place the boot-report unit into the recovered system.
    pub drill: bool,
    /// `--at TIME`: the newest generation started at or before it.
    pub at: Option<String>,
    /// Credentials of a restic/Borg backup (`[restic]`, `[borg]`).
    pub engine: crate::backup::engine::Settings,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            layout: None,
            backup: None,
            identity: None,
            maps: Vec::new(),
            nic_maps: Vec::new(),
            firmware: Default::default(),
            yes: false,
            dry_run: false,
            key_file: None,
            unattended: false,
            answers: None,
            state: None,
            report: None,
            luks_iter_time_ms: None,
            allow_loop: false,
            sys: PathBuf::from("/sys"),
            mount_root: PathBuf::from(MOUNT_ROOT),
            regenerate_initramfs: false,
            wipe: false,
            no_restore: false,
            drill: false,
            at: None,
            engine: Default::default(),
        }
    }
}

/// The unattended answers file (`recover.toml` on the job disk).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// Layout file, relative to the answers file.
    pub layout: Option<String>,
    /// Backup folder (relative to the answers file) or URL.
    pub backup: Option<String>,
    #[serde(default)]
    pub map: Vec<String>,
    /// `--map-nic` of the answers.
    #[serde(default)]
    pub map_nic: Vec<String>,
    /// `--firmware` of the answers (`uefi`, `bios`, `same`).
    pub firmware: Option<plan::firmware::FirmwareChoice>,
    /// Passphrase file for every LUKS container.
    pub key_file: Option<String>,
    /// Identity of an encrypted backup, relative to the answers file (on
    /// the job disk, never in the rescue image).
    pub identity: Option<String>,
    /// Passphrase files per LUKS UUID or mapping name.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    pub luks_iter_time_ms: Option<u32>,
    /// Overwrite target disks that hold data (the `--wipe` of the answers).
    #[serde(default)]
    pub wipe: bool,
    /// Recreate the disks without restoring the backup (`--no-restore`).
    #[serde(default)]
    pub no_restore: bool,
    /// Generation to restore [default: the newest].
    pub generation: Option<String>,
}

impl Answers {
    pub fn load(path: &Path) -> Result<Answers> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim()))
    }
}

/// Everything recovery works with.
pub struct Ctx {
    pub dry_run: bool,
    pub keys: Keys,
    /// Folder holding LUKS header backups named in the layout.
    pub header_dir: Option<PathBuf>,
    pub luks_iter_time_ms: Option<u32>,
    pub root: PathBuf,
    pub sys: PathBuf,
    /// Regenerate the initramfs even when it fits the new disks.
    pub force_initramfs: bool,
}

/// What one step leaves for a later one in the same run.
#[derive(Debug, Default)]
struct RunState {
    /// Files the fixups rewrote.
    configs_changed: Vec<String>,
}

impl Ctx {
    pub fn luks_key(&self, luks: &LuksDevice) -> Result<keys::KeyFile> {
        self.keys.key_for(luks, self.dry_run)
    }

    /// The header backup named in the layout, when it is beside the layout;
    /// else recovery formats a new container (and says so).
    pub fn luks_header(&self, luks: &LuksDevice) -> Option<PathBuf> {
        let name = luks.header_backup.as_ref()?;
        let p = self.header_dir.as_ref()?.join(name);
        if !p.is_file() {
            log::warn!(
                "LUKS header backup {} is not there: formatting a new LUKS container on {} \
                 (to restore the old header, put {name} beside the layout given with --layout)",
                p.display(),
                luks.device
            );
        }
        p.is_file().then_some(p)
    }
}

/// The inputs of a plan, resolved from options, answers and the rescue.
pub struct Prepared {
    pub layout: Layout,
    pub layout_path: PathBuf,
    pub plan: Plan,
    /// What the plan's checks proved before any write.
    pub proof: prove::Proof,
    pub backup: Option<restore::Backup>,
    pub answers_dir: Option<PathBuf>,
    pub answers: Answers,
}

fn resolve_relative(base: Option<&Path>, value: &str) -> String {
    match base {
        Some(dir) if !value.contains("://") && !value.starts_with('/') => {
            dir.join(value).display().to_string()
        }
        _ => value.to_string(),
    }
}

/// Loads the layout and the backup, lists the disks, and computes the plan.
pub fn prepare(opts: &Options) -> Result<Prepared> {
    let answers_path = opts.answers.clone().or_else(|| {
        let p = Path::new(JOB_DIR).join(ANSWERS_FILE);
        (opts.unattended && p.is_file()).then_some(p)
    });
    let answers = match &answers_path {
        Some(p) => Answers::load(p)?,
        None => Answers::default(),
    };
    let answers_dir = answers_path
        .as_ref()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let base = answers_dir.as_deref();

    let backup_spec = opts
        .backup
        .clone()
        .or_else(|| answers.backup.as_ref().map(|b| resolve_relative(base, b)))
        .or_else(|| {
            let p = Path::new(JOB_DIR).join("backup");
            (opts.unattended && p.is_dir()).then(|| p.display().to_string())
        })
        .or_else(|| {
            // A backup included in the ISO with `mkrescue --include-backup`.
            let p = Path::new(MEDIUM_DIR).join(crate::rescue::ISO_BACKUP_DIR);
            p.is_dir().then(|| p.display().to_string())
        })
        .or_else(|| {
            // The LIFEBOAT-DATA partition of a `mkrescue --usb` disk.
            let p =
                Path::new(crate::rescue::usb::DATA_MOUNT).join(crate::rescue::usb::DATA_BACKUP_DIR);
            p.is_dir().then(|| p.display().to_string())
        });
    let identity = opts.identity.clone().or_else(|| {
        answers
            .identity
            .as_ref()
            .map(|i| PathBuf::from(resolve_relative(base, i)))
    });
    let provide = || keys::identity(identity.as_deref(), !opts.unattended);
    let backup = match &backup_spec {
        Some(spec) => Some(restore::Backup::open_pick(
            spec,
            answers.generation.as_deref(),
            opts.at.as_deref(),
            &opts.engine,
            &provide,
        )?),
        None => None,
    };

    let layout_path = opts
        .layout
        .clone()
        .or_else(|| {
            answers
                .layout
                .as_ref()
                .map(|l| PathBuf::from(resolve_relative(base, l)))
        })
        .or_else(|| {
            Path::new(RESCUE_LAYOUT)
                .is_file()
                .then(|| PathBuf::from(RESCUE_LAYOUT))
        })
        .or_else(|| backup.as_ref().and_then(|b| b.layout_path()))
        .or_else(|| {
            let p = PathBuf::from(crate::layout::DEFAULT_PATH);
            p.is_file().then_some(p)
        })
        .context("no layout: give --layout FILE (or a backup, which carries its layout)")?;
    let layout = Layout::load(&layout_path)?;

    let mut maps_text = answers.map.clone();
    maps_text.extend(opts.maps.iter().cloned());
    let maps = mapping::parse_maps(&maps_text)?;
    let mut targets = plan::targets::list(&opts.sys, opts.allow_loop)?;
    plan::targets::probe_contents(&opts.sys, &mut targets)?;
    let excluded = excluded_disks(&opts.sys, &targets, backup.as_ref(), &opts.mount_root)?;
    let input = PlanInput {
        targets,
        maps,
        nics: crate::layout::probe::net::interfaces(&opts.sys),
        nic_maps: plan::nic::parse_nic_maps(
            &answers
                .map_nic
                .iter()
                .chain(&opts.nic_maps)
                .cloned()
                .collect::<Vec<_>>(),
        )?,
        firmware: match opts.firmware {
            plan::firmware::FirmwareChoice::Rescue => answers.firmware.unwrap_or_default(),
            chosen => chosen,
        },
        backup_grub: backup.as_ref().map(|b| {
            ["x86_64-efi", "i386-pc"]
                .iter()
                .filter(|p| b.has_path(&format!("/usr/lib/grub/{p}")))
                .map(|p| p.to_string())
                .collect()
        }),
        excluded,
        manifest_used: backup
            .as_ref()
            .map(|b| b.used_bytes(&layout))
            .unwrap_or_default(),
        backup: backup.as_ref().map(|b| b.display()),
        backup_filesystems: backup.as_ref().map(|b| b.mountpoints()).unwrap_or_default(),
        no_restore: opts.no_restore || answers.no_restore,
        uefi: Path::new("/sys/firmware/efi").exists(),
        unattended: opts.unattended,
    };
    let plan = plan::build(&layout, &input)?;
    let proof = prove::prove(&plan, &input.targets)?;
    Ok(Prepared {
        layout,
        layout_path,
        plan,
        proof,
        backup,
        answers_dir,
        answers,
    })
}

/// The disk a block device is on (`sda2` → `sda`).
fn disk_of(sys: &Path, kname: &str) -> String {
    let dir = sys.join("class/block").join(kname);
    if dir.join("partition").exists() {
        if let Ok(real) = std::fs::canonicalize(&dir) {
            if let Some(parent) = real.parent().and_then(|p| p.file_name()) {
                return parent.to_string_lossy().into_owned();
            }
        }
    }
    kname.to_string()
}

/// Disks that may not be written: the rescue medium, the job disk, the
/// disk holding the backup, and any disk with a mounted file system.
fn excluded_disks(
    sys: &Path,
    targets: &[plan::TargetDisk],
    backup: Option<&restore::Backup>,
    mount_root: &Path,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (label, why) in [
        ("LIFEBOAT_RESCUE", "it holds the lifeboat rescue medium"),
        ("LIFEBOAT-AUTO", "it holds the lifeboat job disk"),
        (
            crate::rescue::usb::DATA_LABEL,
            "it is the lifeboat rescue disk (its LIFEBOAT-DATA partition)",
        ),
    ] {
        let found = crate::exec::Cmd::new("blkid")
            .args([
                "-c",
                "/dev/null",
                "-o",
                "device",
                "-t",
                &format!("LABEL={label}"),
            ])
            .ok_codes(&[2])
            .read()
            .unwrap_or_default();
        for dev in found.lines().filter(|l| !l.is_empty()) {
            let k = dev.trim_start_matches("/dev/");
            out.insert(format!("/dev/{}", disk_of(sys, k)), why.to_string());
        }
    }
    if let Some(kname) = backup.and_then(|b| b.device_kname()) {
        out.insert(
            format!("/dev/{}", disk_of(sys, &kname)),
            "it holds the backup".into(),
        );
    }
    let swaps = crate::mounts::active_swaps();
    let mounts: Vec<crate::mounts::MountInfo> = crate::mounts::mountinfo()?
        .into_iter()
        .filter(|m| !m.path().starts_with(mount_root))
        .collect();
    for t in targets {
        if out.contains_key(&t.path) {
            continue;
        }
        let reasons =
            safety::busy_reasons(sys, &t.path, &mounts, &swaps, &safety::Allowed::default())?;
        // Holders alone (md, dm) may be a previous run's own devices: the
        // apply step checks them against the plan.
        if let Some(r) = reasons.iter().find(|r| !r.starts_with("it is held by")) {
            out.insert(t.path.clone(), format!("it is in use: {r}"));
        }
    }
    Ok(out)
}

/// `lifeboat plan`.
pub fn print_plan(opts: &Options, json: bool) -> Result<u8> {
    let p = prepare(opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&p.plan)?);
    } else {
        print!("{}", render::render(&p.plan));
        println!("\n{}", p.proof.describe());
        if p.backup.is_none() {
            println!("\n(no --backup given: the plan recreates the disks only)");
        }
    }
    check_errors(&p.plan)?;
    Ok(0)
}

/// The plan's errors as one error (recover refuses before any write).
fn check_errors(plan: &Plan) -> Result<()> {
    if plan.errors.is_empty() {
        return Ok(());
    }
    bail!("{}", plan.errors.join("; "))
}

/// What one step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub id: String,
    pub title: String,
    /// `done`, `skipped (already done)`, `dry run`.
    pub status: String,
    pub seconds: f64,
    pub notes: Vec<String>,
}

/// The recovery report, written to the console and into the new system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub lifeboat_version: String,
    pub hostname: String,
    pub layout: String,
    pub backup: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub plan: Plan,
    pub steps: Vec<StepReport>,
    pub restore: Option<restore::RestoreSummary>,
    pub checks: Vec<verify::Check>,
    pub ok: bool,
}

/// The target disks by identity and content, one a line, for the prompt.
fn disks_in_words(plan: &Plan) -> String {
    plan.disks
        .iter()
        .map(|d| {
            format!(
                "  {}, holding {}\n",
                d.describe_new(),
                d.new_contents.describe()
            )
        })
        .collect()
}

/// Asks for the word `yes` on the terminal.
fn confirm(plan: &Plan) -> Result<()> {
    print!(
        "\nEverything on these disks will be destroyed:\n{}Type yes to continue: ",
        disks_in_words(plan)
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "yes" {
        bail!(
            "not confirmed (answer was {:?}); nothing was written",
            line.trim()
        );
    }
    Ok(())
}

/// Failure point for tests (bootupd-style): `LIFEBOAT_FAILPOINT=STEP-ID`
/// ends the process right after that step, as a kill would.
fn failpoint(id: &str) {
    if std::env::var("LIFEBOAT_FAILPOINT").is_ok_and(|f| f == id) {
        eprintln!("lifeboat: failpoint {id} reached: stopping here");
        std::process::exit(99);
    }
}

/// `lifeboat recover`.
pub fn recover(opts: &Options) -> Result<u8> {
    let started = Instant::now();
    let started_at = util::rfc3339(util::now_epoch());
    // Our own mounts from an earlier run go first, so that the plan sees
    // the disks as free and steps can be redone.
    if !opts.dry_run {
        mount::unmount_tree(&opts.mount_root)?;
    }
    let p = prepare(opts)?;
    print!("{}", render::render(&p.plan));
    println!("\n{}", p.proof.describe());
    std::io::stdout().flush()?;
    check_errors(&p.plan)?;
    let state = opts.state.clone().unwrap_or_else(|| {
        if opts.unattended && Path::new(JOB_DIR).is_dir() {
            Path::new(JOB_DIR).join("recover-state.json")
        } else {
            PathBuf::from("/run/lifeboat/recover-state.json")
        }
    });
    let mut journal = Journal::open(&state, &p.plan)?;
    for note in check_foreign_data(&p.plan, &journal, opts.wipe || p.answers.wipe)? {
        println!("{note}");
    }
    if !(opts.yes || opts.unattended || opts.dry_run) {
        confirm(&p.plan)?;
    }

    // Prove that the disks are free (or held only by this plan's devices).
    let allowed = safety::Allowed::of_plan(&p.plan);
    let mounts = crate::mounts::mountinfo()?;
    let swaps = crate::mounts::active_swaps();
    for d in &p.plan.disks {
        let reasons = safety::busy_reasons(&opts.sys, &d.new, &mounts, &swaps, &allowed)?;
        if !reasons.is_empty() {
            bail!("refusing to write {}: {}", d.new, reasons.join("; "));
        }
    }

    let key_file = opts.key_file.clone().or_else(|| {
        p.answers
            .key_file
            .as_ref()
            .map(|k| PathBuf::from(resolve_relative(p.answers_dir.as_deref(), k)))
    });
    let per_device: BTreeMap<String, PathBuf> = p
        .answers
        .keys
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                PathBuf::from(resolve_relative(p.answers_dir.as_deref(), v)),
            )
        })
        .collect();
    let ctx = Ctx {
        dry_run: opts.dry_run,
        keys: Keys::new(key_file, per_device, !opts.unattended),
        header_dir: p.layout_path.parent().map(Path::to_path_buf),
        luks_iter_time_ms: opts.luks_iter_time_ms.or(p.answers.luks_iter_time_ms),
        root: opts.mount_root.clone(),
        sys: opts.sys.clone(),
        force_initramfs: opts.regenerate_initramfs,
    };
    let mut run_state = RunState::default();
    if journal.done_count() > 0 {
        println!(
            "\nresuming: {} steps were completed by an earlier run",
            journal.done_count()
        );
    }

    let tables: Vec<(String, PartitionTable)> = p
        .plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Partition { disk, table, .. } => Some((disk.clone(), table.clone())),
            _ => None,
        })
        .collect();
    let mut steps = Vec::new();
    let mut restore_summary = None;
    let mut checks = Vec::new();
    let total = p.plan.steps.len();
    for (i, step) in p.plan.steps.iter().enumerate() {
        let id = step_id(step);
        let title = render::step_title(step);
        println!("\n[{}/{total}] {title}", i + 1);
        let t = Instant::now();
        // Destructive steps are redone unless recorded; the restore and the
        // fixups are safe to redo but skipped when recorded too.
        if journal.is_done(&id) && !matches!(step, Step::Mount { .. } | Step::Verify) {
            if matches!(step, Step::FixConfig { .. }) {
                // Which files changed is not recorded: assume the initramfs
                // holds one of them.
                run_state
                    .configs_changed
                    .push("/etc/fstab (rewritten by an earlier run)".into());
            }
            println!("      already done by an earlier run");
            steps.push(StepReport {
                id,
                title,
                status: "skipped (already done)".into(),
                seconds: 0.0,
                notes: vec![],
            });
            continue;
        }
        let notes = match step {
            Step::Verify => {
                checks = verify::verify(&ctx, &p.plan, restore_summary.as_ref())?;
                for c in &checks {
                    println!(
                        "      {} {}: {}",
                        if c.ok { "ok  " } else { "FAIL" },
                        c.what,
                        c.detail
                    );
                }
                vec![]
            }
            Step::Restore { .. } => {
                let backup = p
                    .backup
                    .as_ref()
                    .context("a restore step without a backup")?;
                let summary = backup.restore_into(&ctx.root, ctx.dry_run)?;
                let note = summary.describe();
                restore_summary = Some(summary);
                vec![note]
            }
            other => apply(&ctx, other, &tables, &p.plan, &mut run_state)?,
        };
        for n in &notes {
            println!("      {n}");
        }
        if !opts.dry_run {
            journal.mark(&id)?;
        }
        failpoint(&id);
        steps.push(StepReport {
            id,
            title,
            status: if opts.dry_run {
                "dry run".into()
            } else {
                "done".into()
            },
            seconds: t.elapsed().as_secs_f64(),
            notes,
        });
    }

    let ok = checks.iter().all(|c| c.ok);
    let report = Report {
        lifeboat_version: crate::VERSION.into(),
        hostname: p.layout.host.hostname.clone(),
        layout: p.layout_path.display().to_string(),
        backup: p.backup.as_ref().map(|b| b.display()),
        started_at,
        finished_at: util::rfc3339(util::now_epoch()),
        seconds: started.elapsed().as_secs_f64(),
        plan: p.plan.clone(),
        steps,
        restore: restore_summary,
        checks,
        ok,
    };
    let json = serde_json::to_string_pretty(&report)? + "\n";
    if !opts.dry_run {
        let in_system = ctx.root.join("var/log/lifeboat");
        if ctx.root.join("etc").is_dir() {
            std::fs::create_dir_all(&in_system)?;
            util::write_atomic(
                &in_system.join("recovery-report.json"),
                json.as_bytes(),
                0o644,
            )?;
        }
        if let Some(r) = &opts.report {
            util::write_atomic(r, json.as_bytes(), 0o644)?;
        }
        if opts.drill && ok {
            println!("{}", crate::drill::unit::plant(&ctx.root)?);
        }
        finish(&p.plan, &ctx.root)?;
    }
    println!(
        "\nlifeboat recover: {} in {:.0}s{}",
        if ok {
            "recovery complete"
        } else {
            "recovery finished with FAILED checks"
        },
        report.seconds,
        if opts.dry_run {
            " (dry run: nothing was written)"
        } else {
            ""
        }
    );
    if let Some(r) = &report.restore {
        println!("lifeboat recover: {}", r.describe());
    }
    if !ok {
        bail!("verification failed: see the checks above");
    }
    Ok(0)
}

/// Refuses, before anything is written, a target disk that holds data
/// this plan did not write (the journal of an interrupted run says which it
/// did), unless `wipe`. Returns what `wipe` lets be overwritten, in words.
fn check_foreign_data(plan: &Plan, journal: &Journal, wipe: bool) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for d in &plan.disks {
        if d.new_contents.is_blank() || journal.wrote_disk(plan, &d.new) {
            continue;
        }
        let what = format!("{} holds {}", d.describe_new(), d.new_contents.describe());
        if !wipe {
            bail!(
                "refusing to write {what}; nothing was written. If that may be destroyed, \
                 add --wipe (wipe = true in recover.toml), or choose another disk with --map"
            );
        }
        notes.push(format!("--wipe: overwriting {what}"));
    }
    Ok(notes)
}

/// Applies one storage or system step.
fn apply(
    ctx: &Ctx,
    step: &Step,
    tables: &[(String, PartitionTable)],
    plan: &Plan,
    state: &mut RunState,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    match step {
        Step::Partition { disk, table, .. } => {
            let devices = disk::partition_devices(disk, table);
            let current = disk::read_table(Path::new(disk)).ok().flatten();
            if current
                .as_ref()
                .is_some_and(|c| verify::same_table(c, table))
            {
                notes.push("the disk already has this partition table".into());
            } else if !ctx.dry_run {
                crate::exec::Cmd::new("wipefs")
                    .args(["-a", "-q", disk])
                    .run()?;
                let mut f = disk::open_exclusive(disk)?;
                disk::write_table(&mut f, table)
                    .with_context(|| format!("writing the partition table of {disk}"))?;
                drop(f);
            }
            disk::reread_and_wait(disk, &devices, ctx.dry_run)?;
            if current.is_none()
                || !current
                    .as_ref()
                    .is_some_and(|c| verify::same_table(c, table))
            {
                // Old signatures inside the new partitions (md superblocks,
                // LVM labels) would confuse the tools that come next.
                for d in &devices {
                    crate::exec::Cmd::new("wipefs")
                        .args(["-a", "-q", d])
                        .mutating(ctx.dry_run)
                        .run()?;
                }
            }
            notes.push(format!("partitions: {}", devices.join(", ")));
        }
        Step::CreateMd { array } => storage::create_md(ctx, array)?,
        Step::FormatLuks { luks, name } => storage::format_luks(ctx, luks, name)?,
        Step::CreateVg {
            vg,
            pvs,
            lvs,
            internal_uuids,
        } => storage::create_vg(ctx, vg, pvs, lvs, internal_uuids)?,
        Step::Mkfs { fs } => mkfs::mkfs(ctx, fs)?,
        Step::Mkswap { swap } => mkfs::mkswap(ctx, swap)?,
        Step::Mount { mounts } => {
            for m in mounts {
                let target = ctx.root.join(m.mountpoint.trim_start_matches('/'));
                if !ctx.dry_run {
                    std::fs::create_dir_all(&target)
                        .with_context(|| format!("creating {}", target.display()))?;
                }
                let mut c = crate::exec::Cmd::new("mount").args(["-t", &m.fstype]);
                if !m.options.is_empty() {
                    c = c.args(["-o", &m.options.join(",")]);
                }
                c.arg(&m.device).arg(&target).mutating(ctx.dry_run).run()?;
            }
        }
        Step::FixConfig { replacements } => {
            let changed = fixup::fix_config(&ctx.root, replacements, ctx.dry_run)?;
            if changed.is_empty() {
                notes.push("no file named a changed device".into());
            } else {
                notes.push(format!("rewrote {}", changed.join(", ")));
            }
            state.configs_changed.extend(changed);
        }
        Step::Migrate {
            to,
            fstab,
            grub_dir,
            package,
        } => notes.extend(boot::migrate(
            &ctx.root,
            *to,
            fstab.as_deref(),
            grub_dir,
            package,
            ctx.dry_run,
        )?),
        Step::Network { nics } => {
            let (report, changed) = network::rewrite(&ctx.root, nics, ctx.dry_run)?;
            if report.is_empty() {
                notes.push("no network configuration named the old interfaces".into());
            }
            notes.extend(report);
            state.configs_changed.extend(changed);
        }
        Step::Initramfs => {
            if !ctx.dry_run {
                let disks: Vec<String> = plan
                    .disks
                    .iter()
                    .map(|d| d.new.trim_start_matches("/dev/").to_string())
                    .collect();
                let drivers = crate::rescue::contents::driver_modules(&ctx.sys, &disks);
                notes.push(fixup::regenerate_initramfs(
                    &ctx.root,
                    &drivers,
                    &state.configs_changed,
                    ctx.force_initramfs,
                )?);
            }
        }
        Step::Bootloader {
            bios_disks,
            efi_entries,
            esps,
            write_nvram,
            grub_efi,
        } => {
            if !ctx.dry_run {
                let chroot = fixup::Chroot::enter(&ctx.root)?;
                if !bios_disks.is_empty() {
                    notes.extend(boot::grub_bios(&chroot, bios_disks)?);
                }
                if *grub_efi {
                    notes.extend(boot::grub_efi(&chroot, efi_entries)?);
                }
                if let Some(n) = boot::grub_config(&chroot)? {
                    notes.push(n);
                }
                drop(chroot);
                for esp in esps {
                    let mp = esp_mountpoint(esp, ctx);
                    match mp {
                        Some(dir) => {
                            if let Some(n) = boot::ensure_fallback(&dir, efi_entries)? {
                                notes.push(n);
                            }
                        }
                        None => notes.push(format!("ESP {esp} is not mounted in the new system: fallback loader not checked")),
                    }
                }
                if *write_nvram && !efi_entries.is_empty() {
                    notes.extend(boot::efi_entries(efi_entries, tables)?);
                }
            }
        }
        Step::Restore { .. } | Step::Verify => unreachable!("handled by the caller"),
    }
    Ok(notes)
}

/// Where the ESP `esp` (a new device path) is mounted under the root.
fn esp_mountpoint(esp: &str, ctx: &Ctx) -> Option<PathBuf> {
    let mounts = crate::mounts::mountinfo().ok()?;
    let want = std::fs::canonicalize(esp).ok()?;
    mounts
        .into_iter()
        .filter(|m| m.path().starts_with(&ctx.root))
        .find(|m| std::fs::canonicalize(&m.source).ok().as_ref() == Some(&want))
        .map(|m| PathBuf::from(m.mountpoint))
}

/// Leaves the disks in a clean state: unmounted, VGs deactivated, LUKS
/// closed, md arrays stopped.
fn finish(plan: &Plan, root: &Path) -> Result<()> {
    crate::exec::Cmd::new("sync").run().ok();
    mount::unmount_tree(root)?;
    for s in plan.steps.iter().rev() {
        match s {
            Step::CreateVg { vg, .. } => {
                crate::exec::Cmd::new("lvm")
                    .args(["vgchange", "-an", &vg.name])
                    .run()?;
            }
            Step::FormatLuks { name, .. } if Path::new(&format!("/dev/mapper/{name}")).exists() => {
                crate::exec::Cmd::new("cryptsetup")
                    .args(["close", name])
                    .run()?;
            }
            Step::CreateMd { array } => {
                crate::exec::Cmd::new("mdadm")
                    .args(["--stop", &array.device])
                    .run()?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::targets::{Contents, SigKind, Signature};
    use journal::tests::{plan_on, with_mbr};

    fn ext4() -> Contents {
        Contents {
            signatures: vec![Signature {
                device: "/dev/vdb".into(),
                kind: SigKind::Filesystem,
                fstype: "ext4".into(),
                label: Some("keep".into()),
                uuid: Some("0e2c6d4a-6666-4222-8333-444455556602".into()),
                name: None,
            }],
            ..Contents::default()
        }
    }

    #[test]
    fn a_disk_holding_data_needs_wipe() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_on("/dev/vdb", Some("BYSTANDER"), ext4());
        let j = Journal::open(&dir.path().join("state.json"), &plan).unwrap();
        let err = check_foreign_data(&plan, &j, false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "refusing to write /dev/vdb (QEMU HARDDISK, serial BYSTANDER, 1.0 GiB) holds \
             /dev/vdb: ext4 label \"keep\" (UUID 0e2c6d4a-6666-4222-8333-444455556602); nothing \
             was written. If that may be destroyed, add --wipe (wipe = true in recover.toml), \
             or choose another disk with --map"
        );
        let notes = check_foreign_data(&plan, &j, true).unwrap();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("--wipe: overwriting /dev/vdb"),
            "{notes:?}"
        );
        // A blank disk needs nothing.
        let blank = plan_on("/dev/vdb", Some("NEW"), Contents::default());
        assert!(check_foreign_data(&blank, &j, false).unwrap().is_empty());
    }

    #[test]
    fn what_an_interrupted_run_of_this_plan_wrote_needs_no_wipe() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let first = plan_on("/dev/vdb", Some("TARGET"), Contents::default());
        Journal::open(&state, &first)
            .unwrap()
            .mark("partition:/dev/vdb")
            .unwrap();
        let resumed = plan_on("/dev/vdb", Some("TARGET"), with_mbr("0x0000beef"));
        let j = Journal::open(&state, &resumed).unwrap();
        assert!(check_foreign_data(&resumed, &j, false).unwrap().is_empty());
    }

    #[test]
    fn answers_file_says_wipe() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("recover.toml");
        std::fs::write(&p, "map = [\"/dev/sda=/dev/vdb\"]\nwipe = true\n").unwrap();
        let a = Answers::load(&p).unwrap();
        assert!(a.wipe);
        assert_eq!(a.map, ["/dev/sda=/dev/vdb"]);
        std::fs::write(&p, "map = []\n").unwrap();
        assert!(!Answers::load(&p).unwrap().wipe);
    }

    #[test]
    fn the_prompt_names_each_disk_by_identity_and_content() {
        let plan = plan_on("/dev/vdb", Some("BYSTANDER"), ext4());
        assert_eq!(
            disks_in_words(&plan),
            "  /dev/vdb (QEMU HARDDISK, serial BYSTANDER, 1.0 GiB), holding /dev/vdb: ext4 \
             label \"keep\" (UUID 0e2c6d4a-6666-4222-8333-444455556602)\n"
        );
    }
}
