//! `lifeboat recover`: applies a recovery plan. Shows the plan, asks for
//! confirmation, proves that every target disk is free, then runs the steps
//! in order, recording each one so that a re-run resumes after a failure.

mod apply;
pub mod boot;
pub mod disk;
pub mod fixup;
#[cfg(test)]
mod gate_audit;
pub mod journal;
pub mod keys;
pub mod mkfs;
pub mod mount;
pub mod network;
pub mod prove;
pub mod restore;
pub mod safety;
pub mod secureboot;
mod status;
pub mod storage;
pub mod verify;

pub use status::StepStatus;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::exec::Gate;
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
    /// `--dry-run`: a gate that shows every change instead of making it.
    pub gate: Gate,
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
    /// Ignore what an earlier run recorded as done (`--start-over`).
    pub start_over: bool,
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
            gate: Gate::live(),
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
            start_over: false,
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
    /// Every change to the disks and the new system passes it.
    pub gate: Gate,
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
    pub fn dry_run(&self) -> bool {
        self.gate.is_dry_run()
    }

    pub fn luks_key(&self, luks: &LuksDevice) -> Result<keys::KeyFile> {
        self.keys.key_for(luks, self.dry_run())
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
    let (answers, answers_dir) = load_answers(opts)?;
    let base = answers_dir.as_deref();
    let backup = open_backup(opts, &answers, base)?;
    let layout_path = layout_path(opts, &answers, base, backup.as_ref())?;
    let layout = Layout::load(&layout_path)?;
    let input = plan_input(opts, &answers, &layout, backup.as_ref())?;
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

/// The answers file (`--answers`, else the job disk's when unattended) and
/// its folder, against which the paths it names are resolved.
fn load_answers(opts: &Options) -> Result<(Answers, Option<PathBuf>)> {
    let answers_path = opts.answers.clone().or_else(|| {
        let p = Path::new(JOB_DIR).join(ANSWERS_FILE);
        (opts.unattended && p.is_file()).then_some(p)
    });
    let answers = match &answers_path {
        Some(p) => Answers::load(p)?,
        None => Answers::default(),
    };
    let dir = answers_path.and_then(|p| p.parent().map(Path::to_path_buf));
    Ok((answers, dir))
}

/// The backup to restore: `--backup`, the answers', the job disk's, or
/// the one included in the rescue ISO (`mkrescue --include-backup`).
fn open_backup(
    opts: &Options,
    answers: &Answers,
    base: Option<&Path>,
) -> Result<Option<restore::Backup>> {
    let spec = opts
        .backup
        .clone()
        .or_else(|| answers.backup.as_ref().map(|b| resolve_relative(base, b)))
        .or_else(|| {
            let p = Path::new(JOB_DIR).join("backup");
            (opts.unattended && p.is_dir()).then(|| p.display().to_string())
        })
        .or_else(|| {
            let p = Path::new(MEDIUM_DIR).join(crate::rescue::ISO_BACKUP_DIR);
            p.is_dir().then(|| p.display().to_string())
        })
        .or_else(|| {
            // The LIFEBOAT-DATA partition of a `mkrescue --usb` disk.
            let p =
                Path::new(crate::rescue::usb::DATA_MOUNT).join(crate::rescue::usb::DATA_BACKUP_DIR);
            p.is_dir().then(|| p.display().to_string())
        });
    let Some(spec) = spec else {
        return Ok(None);
    };
    let identity = opts.identity.clone().or_else(|| {
        answers
            .identity
            .as_ref()
            .map(|i| PathBuf::from(resolve_relative(base, i)))
    });
    let provide = || keys::identity(identity.as_deref(), !opts.unattended);
    restore::Backup::open_pick(
        &spec,
        answers.generation.as_deref(),
        opts.at.as_deref(),
        &opts.engine,
        &provide,
    )
    .map(Some)
}

/// The layout to recreate: `--layout`, the answers', the rescue image's,
/// the backup's, else the host's saved one.
fn layout_path(
    opts: &Options,
    answers: &Answers,
    base: Option<&Path>,
    backup: Option<&restore::Backup>,
) -> Result<PathBuf> {
    opts.layout
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
        .or_else(|| backup.and_then(|b| b.layout_path()))
        .or_else(|| {
            let p = PathBuf::from(crate::layout::DEFAULT_PATH);
            p.is_file().then_some(p)
        })
        .context("no layout: give --layout FILE (or a backup, which carries its layout)")
}

/// What the plan is built from: the disks here and what they hold, the
/// mappings, the network interfaces, the firmware, and what the backup has.
fn plan_input(
    opts: &Options,
    answers: &Answers,
    layout: &Layout,
    backup: Option<&restore::Backup>,
) -> Result<PlanInput> {
    let mut maps_text = answers.map.clone();
    maps_text.extend(opts.maps.iter().cloned());
    let nic_maps: Vec<String> = answers
        .map_nic
        .iter()
        .chain(&opts.nic_maps)
        .cloned()
        .collect();
    let mut targets = plan::targets::list(&opts.sys, opts.allow_loop)?;
    plan::targets::probe_contents(&opts.sys, &mut targets)?;
    let excluded = excluded_disks(&opts.sys, &targets, backup, &opts.mount_root)?;
    Ok(PlanInput {
        targets,
        maps: mapping::parse_maps(&maps_text)?,
        nics: crate::layout::probe::net::interfaces(&opts.sys),
        nic_maps: plan::nic::parse_nic_maps(&nic_maps)?,
        firmware: match opts.firmware {
            plan::firmware::FirmwareChoice::Rescue => answers.firmware.unwrap_or_default(),
            chosen => chosen,
        },
        backup_grub: backup.map(|b| {
            ["x86_64-efi", "i386-pc"]
                .iter()
                .filter(|p| b.has_path(&format!("/usr/lib/grub/{p}")))
                .map(|p| p.to_string())
                .collect()
        }),
        excluded,
        manifest_used: backup.map(|b| b.used_bytes(layout)).unwrap_or_default(),
        backup: backup.map(|b| b.display()),
        backup_filesystems: backup.map(|b| b.mountpoints()).unwrap_or_default(),
        no_restore: opts.no_restore || answers.no_restore,
        uefi: Path::new("/sys/firmware/efi").exists(),
        unattended: opts.unattended,
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
        if let Some(r) = reasons
            .iter()
            .find(|r| !matches!(r, safety::Busy::HeldBy(_)))
        {
            out.insert(t.path.clone(), format!("it is in use: {r}"));
        }
    }
    Ok(out)
}

/// The plan's errors as one error (recover refuses before any write).
pub fn check_errors(plan: &Plan) -> Result<()> {
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
    pub status: StepStatus,
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
pub fn disks_in_words(plan: &Plan) -> String {
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

/// Failure point for tests (bootupd-style): `LIFEBOAT_FAILPOINT=STEP-ID`
/// ends the process right after that step, as a kill would.
fn failpoint(id: &str) {
    if std::env::var("LIFEBOAT_FAILPOINT").is_ok_and(|f| f == id) {
        log::error!("failpoint {id} reached: stopping here");
        std::process::exit(99);
    }
}

/// What recovery shows as it goes, and the one question it asks: the
/// library never prints; the CLI implements this on the terminal.
pub trait Console {
    fn show(&mut self, event: Event<'_>);
    /// Asks to go on (everything on the plan's disks is destroyed); an
    /// error ends the recovery before anything is written.
    fn confirm(&mut self, plan: &Plan) -> Result<()>;
}

/// A moment of a recovery worth showing.
pub enum Event<'a> {
    /// The plan and its proof, before anything else.
    Plan(&'a Prepared),
    /// A line about the whole run (what `--wipe` overwrites, the drill's
    /// boot-report unit).
    Note(String),
    /// An earlier run recorded this many steps as done.
    Resuming(usize),
    /// Step `number` of `total` begins.
    Step {
        number: usize,
        total: usize,
        title: String,
    },
    /// The step was done by an earlier run.
    AlreadyDone,
    /// What the step did, a line each.
    Notes(&'a [String]),
    /// The verification's checks.
    Checks(&'a [verify::Check]),
}

/// `lifeboat recover`: the plan, the journal, the checks before any write,
/// the steps, and the report (which says whether every check passed).
pub fn recover(opts: &Options, console: &mut dyn Console) -> Result<Report> {
    let started = Instant::now();
    let started_at = util::rfc3339(util::now_epoch());
    // Our own mounts from an earlier run go first, so that the plan sees
    // the disks as free and steps can be redone.
    mount::unmount_tree(&opts.mount_root, &opts.gate)?;
    let p = prepare(opts)?;
    console.show(Event::Plan(&p));
    check_errors(&p.plan)?;
    let mut journal = open_journal(opts, &p.plan)?;
    for note in check_foreign_data(&p.plan, &journal, opts.wipe || p.answers.wipe)? {
        console.show(Event::Note(note));
    }
    if !(opts.yes || opts.unattended || opts.gate.is_dry_run()) {
        console.confirm(&p.plan)?;
    }
    check_disks_free(&opts.sys, &p.plan)?;
    let ctx = context(opts, &p);
    if journal.done_count() > 0 {
        console.show(Event::Resuming(journal.done_count()));
    }
    let run = run_steps(&ctx, &p, &mut journal, console)?;
    let ok = run.checks.iter().all(|c| c.ok);
    let report = Report {
        lifeboat_version: crate::VERSION.into(),
        hostname: p.layout.host.hostname.clone(),
        layout: p.layout_path.display().to_string(),
        backup: p.backup.as_ref().map(|b| b.display()),
        started_at,
        finished_at: util::rfc3339(util::now_epoch()),
        seconds: started.elapsed().as_secs_f64(),
        plan: p.plan.clone(),
        steps: run.steps,
        restore: run.restore,
        checks: run.checks,
        ok,
    };
    if !opts.gate.is_dry_run() {
        write_report(&ctx.root, opts.report.as_deref(), &report)?;
        if opts.drill && ok {
            console.show(Event::Note(crate::drill::unit::plant(&ctx.root)?));
        }
        apply::finish(&p.plan, &ctx.root, &ctx.gate)?;
    }
    Ok(report)
}

/// The journal at `--state` (else the job disk's when unattended, else
/// /run/lifeboat's): resumed, or fresh with `--start-over`.
fn open_journal(opts: &Options, plan: &Plan) -> Result<Journal> {
    let state = opts.state.clone().unwrap_or_else(|| {
        if opts.unattended && Path::new(JOB_DIR).is_dir() {
            Path::new(JOB_DIR).join("recover-state.json")
        } else {
            PathBuf::from("/run/lifeboat/recover-state.json")
        }
    });
    if opts.start_over {
        Ok(Journal::fresh(&state, plan))
    } else {
        Journal::open(&state, plan)
    }
}

/// Proves that the disks are free (or held only by this plan's devices).
fn check_disks_free(sys: &Path, plan: &Plan) -> Result<()> {
    let allowed = safety::Allowed::of_plan(plan);
    let mounts = crate::mounts::mountinfo()?;
    let swaps = crate::mounts::active_swaps();
    for d in &plan.disks {
        let reasons = safety::busy_reasons(sys, &d.new, &mounts, &swaps, &allowed)?;
        if !reasons.is_empty() {
            let words: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            bail!("refusing to write {}: {}", d.new, words.join("; "));
        }
    }
    Ok(())
}

/// The context of the steps: the gate, the LUKS keys (files of the
/// options or the answers, else asked), where the new system is mounted.
fn context(opts: &Options, p: &Prepared) -> Ctx {
    let base = p.answers_dir.as_deref();
    let key_file = opts.key_file.clone().or_else(|| {
        p.answers
            .key_file
            .as_ref()
            .map(|k| PathBuf::from(resolve_relative(base, k)))
    });
    let per_device: BTreeMap<String, PathBuf> = p
        .answers
        .keys
        .iter()
        .map(|(k, v)| (k.clone(), PathBuf::from(resolve_relative(base, v))))
        .collect();
    Ctx {
        gate: opts.gate.clone(),
        keys: Keys::new(key_file, per_device, !opts.unattended),
        header_dir: p.layout_path.parent().map(Path::to_path_buf),
        luks_iter_time_ms: opts.luks_iter_time_ms.or(p.answers.luks_iter_time_ms),
        root: opts.mount_root.clone(),
        sys: opts.sys.clone(),
        force_initramfs: opts.regenerate_initramfs,
    }
}

/// What the steps produced for the report.
#[derive(Default)]
struct Run {
    steps: Vec<StepReport>,
    restore: Option<restore::RestoreSummary>,
    checks: Vec<verify::Check>,
    state: RunState,
}

/// Runs the plan's steps in order, skipping what the journal records and
/// recording what is done.
fn run_steps(
    ctx: &Ctx,
    p: &Prepared,
    journal: &mut Journal,
    console: &mut dyn Console,
) -> Result<Run> {
    let tables: Vec<(String, PartitionTable)> = p
        .plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Partition { disk, table, .. } => Some((disk.clone(), table.clone())),
            _ => None,
        })
        .collect();
    let mut run = Run::default();
    let total = p.plan.steps.len();
    for (i, step) in p.plan.steps.iter().enumerate() {
        let title = render::step_title(step);
        console.show(Event::Step {
            number: i + 1,
            total,
            title: title.clone(),
        });
        let t = Instant::now();
        let id = step_id(step);
        // Destructive steps are redone unless recorded; the restore and the
        // fixups are safe to redo but skipped when recorded too.
        if journal.is_done(&id) && !matches!(step, Step::Mount { .. } | Step::Verify) {
            if matches!(step, Step::FixConfig { .. }) {
                // Which files changed is not recorded: assume the initramfs
                // holds one of them.
                run.state
                    .configs_changed
                    .push("/etc/fstab (rewritten by an earlier run)".into());
            }
            console.show(Event::AlreadyDone);
            run.steps
                .push(step_report(id, title, StepStatus::AlreadyDone, 0.0, vec![]));
            continue;
        }
        let notes = run_step(ctx, p, step, &tables, &mut run, console)?;
        console.show(Event::Notes(&notes));
        if !ctx.dry_run() {
            journal.mark(&id)?;
        }
        failpoint(&id);
        let status = if ctx.dry_run() {
            StepStatus::DryRun
        } else {
            StepStatus::Done
        };
        let seconds = t.elapsed().as_secs_f64();
        run.steps
            .push(step_report(id, title, status, seconds, notes));
    }
    Ok(run)
}

fn step_report(
    id: String,
    title: String,
    status: StepStatus,
    seconds: f64,
    notes: Vec<String>,
) -> StepReport {
    StepReport {
        id,
        title,
        status,
        seconds,
        notes,
    }
}

/// One step: the verification and the restore here, the rest in [`apply`].
fn run_step(
    ctx: &Ctx,
    p: &Prepared,
    step: &Step,
    tables: &[(String, PartitionTable)],
    run: &mut Run,
    console: &mut dyn Console,
) -> Result<Vec<String>> {
    match step {
        Step::Verify => {
            run.checks = verify::verify(ctx, &p.plan, run.restore.as_ref())?;
            console.show(Event::Checks(&run.checks));
            Ok(vec![])
        }
        Step::Restore { .. } => {
            let backup = p
                .backup
                .as_ref()
                .context("a restore step without a backup")?;
            let summary = backup.restore_into(&ctx.root, &ctx.gate)?;
            let note = summary.describe();
            run.restore = Some(summary);
            Ok(vec![note])
        }
        other => apply::apply(ctx, other, tables, &p.plan, &mut run.state),
    }
}

/// The report into the recovered system (when it has an /etc) and to
/// `--report`.
fn write_report(root: &Path, extra: Option<&Path>, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report)? + "\n";
    if root.join("etc").is_dir() {
        let in_system = root.join("var/log/lifeboat");
        std::fs::create_dir_all(&in_system)
            .with_context(|| format!("creating {}", in_system.display()))?;
        util::write_atomic(
            &in_system.join("recovery-report.json"),
            json.as_bytes(),
            0o644,
        )?;
    }
    if let Some(r) = extra {
        util::write_atomic(r, json.as_bytes(), 0o644)?;
    }
    Ok(())
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
