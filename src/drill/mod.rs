//! `lifeboat drill`: recovery as on the day, in a VM. The rescue image as
//! built boots on scratch disks shaped like the layout's, with the backup as
//! stored (read-only, not copied), recovers unattended, and the recovered
//! disks then boot under each firmware the source had until the system
//! reaches its boot target. Every phase is timed; one JSON report.
//!
//! A drill only ever opens files under its work folder: the scratch disks
//! are image files, QEMU is the only one to write them.

pub mod console;
pub mod job;
pub mod machine;
pub mod qemu;
pub mod report;
pub mod unit;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::layout::{Firmware, Layout};
use crate::rescue::BuildRecord;
use crate::util;
use console::{Seen, Watcher};
use job::{BackupAccess, JobFiles};
use machine::{firmware_name, FirmwareChoice, ScratchDisk, SizeRequest};
use qemu::{Accel, AccelChoice, Console, Guest, Media};
use report::{Boot, Inputs, Phase, Report, Run, Step, Verdict};

/// Default parent of the work folders.
pub const DEFAULT_WORK: &str = "/var/tmp/lifeboat-drill";

/// What `lifeboat drill` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub rescue_dir: PathBuf,
    pub backup: String,
    pub layout: Option<PathBuf>,
    pub generation: Option<String>,
    pub disk_sizes: Vec<SizeRequest>,
    pub firmware: FirmwareChoice,
    pub accel: AccelChoice,
    pub memory_mib: u32,
    pub cpus: u32,
    pub work: PathBuf,
    pub key_file: Option<PathBuf>,
    /// The longest one guest (a recovery, a boot) may run.
    pub timeout: Duration,
    pub keep: bool,
    pub state_dir: PathBuf,
}

/// Everything checked before anything starts.
pub struct Prepared {
    pub layout: Layout,
    pub layout_path: PathBuf,
    pub record: BuildRecord,
    pub iso: PathBuf,
    pub vmlinuz: PathBuf,
    pub access: BackupAccess,
    /// The folder shared with the rescue guest (local backups).
    pub share: Option<PathBuf>,
    pub generation: String,
    pub key: Option<Vec<u8>>,
    pub disks: Vec<ScratchDisk>,
    pub rescue_firmwares: Vec<Firmware>,
    pub boot_firmwares: Vec<Firmware>,
    /// The drill's own folder under the work folder, and its lock.
    pub dir: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Progress: (phase, step) as the drill goes.
pub type Progress<'a> = &'a mut dyn FnMut(&str, &str);

/// The rescue image in `dir`: its record, ISO and kernel.
fn rescue_image(dir: &Path) -> Result<(BuildRecord, PathBuf, PathBuf)> {
    if !dir.join(crate::rescue::BUILD_RECORD).is_file() {
        bail!(
            "no rescue image in {} (no {}): build one with `lifeboat mkrescue` or give --rescue DIR",
            dir.display(),
            crate::rescue::BUILD_RECORD
        );
    }
    let rec = BuildRecord::load(dir)?;
    let iso = dir.join(crate::rescue::ISO);
    let vmlinuz = dir.join(crate::rescue::VMLINUZ);
    if !iso.is_file() {
        bail!(
            "the rescue image in {} has no ISO ({}): rebuild it without --no-iso",
            dir.display(),
            crate::rescue::ISO
        );
    }
    Ok((rec, iso, vmlinuz))
}

/// The layout to drill: `--layout` (which must be the one built into the
/// image), else the image's own.
fn drill_layout(
    rec: &BuildRecord,
    given: Option<&Path>,
    state_dir: &Path,
) -> Result<(Layout, PathBuf)> {
    match given {
        Some(p) => {
            let sha = crate::rescue::sha256_file(p)
                .with_context(|| format!("reading the layout {}", p.display()))?;
            if let Some(built) = &rec.layout_sha256 {
                if *built != sha {
                    bail!(
                        "mismatched layout: {} is not the layout built into the rescue image ({}); \
                         rebuild the image with it or leave out --layout",
                        p.display(),
                        rec.layout.as_deref().unwrap_or("?")
                    );
                }
            }
            Ok((Layout::load(p)?, p.to_path_buf()))
        }
        None => {
            let snapshots =
                crate::schedule::snapshot::SnapshotStore::new(&state_dir.join("snapshots"));
            crate::schedule::monitor::image_layout(rec, &snapshots)
                .map_err(|e| anyhow::anyhow!("{e}; give --layout FILE"))
        }
    }
}

/// The work folder: created, locked against a second drill, with room.
fn work_dir(base: &Path, needed: u64) -> Result<(PathBuf, nix::fcntl::Flock<std::fs::File>)> {
    std::fs::create_dir_all(base)
        .with_context(|| format!("creating the work folder {}", base.display()))?;
    let lock = match util::lock_file(&base.join(".lock"))? {
        util::Lock::Taken(f) => f,
        util::Lock::Busy(_) => bail!(
            "the work folder {} is busy: another drill runs there; wait for it or give --work DIR",
            base.display()
        ),
    };
    machine::check_space(base, needed, machine::available_bytes(base)?)?;
    let dir = base.join(format!("drill-{}", util::stamp(util::now_epoch())));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((dir, lock))
}

/// Checks every input and the host before anything starts.
pub fn prepare(opts: &Options) -> Result<Prepared> {
    let (record, iso, vmlinuz) = rescue_image(&opts.rescue_dir)?;
    let (layout, layout_path) = drill_layout(&record, opts.layout.as_deref(), &opts.state_dir)?;
    let disks_probe = machine::scratch_disks(&layout, Path::new("/nonexistent"), &opts.disk_sizes)?;
    let rescue_firmwares = machine::rescue_firmwares(opts.firmware, &layout)?;
    let boot_firmwares = machine::source_firmwares(&layout);
    let key = match &opts.key_file {
        Some(k) => Some(util::read_regular(k, "key file", 64 << 10)?),
        None if !layout.luks.is_empty() => {
            bail!("the layout has LUKS containers: give their passphrase with --key-file FILE")
        }
        None => None,
    };
    crate::exec::require(&[qemu::QEMU, "mkfs.ext4", "debugfs", "e2fsck"])?;
    if rescue_firmwares.contains(&Firmware::Uefi) || boot_firmwares.contains(&Firmware::Uefi) {
        for f in [qemu::OVMF_CODE, qemu::OVMF_VARS] {
            if !Path::new(f).is_file() {
                bail!("{f} is missing: install package ovmf");
            }
        }
    }
    let backup = crate::recover::restore::Backup::open_at(
        &opts.backup,
        opts.generation.as_deref(),
        &Default::default(),
    )?;
    let used: u64 = backup.used_bytes(&layout).values().sum();
    let access = BackupAccess::of(&opts.backup);
    let share = match access {
        BackupAccess::Share => Some(
            std::fs::canonicalize(&opts.backup)
                .with_context(|| format!("reading the backup folder {}", opts.backup))?,
        ),
        BackupAccess::Url(_) => None,
    };
    let (dir, lock) = work_dir(&opts.work, machine::space_needed(used))?;
    let disks = disks_probe
        .into_iter()
        .map(|d| ScratchDisk {
            image: dir.join(d.image.file_name().expect("an image name")),
            ..d
        })
        .collect();
    Ok(Prepared {
        generation: backup.generation_id().to_string(),
        layout,
        layout_path,
        record,
        iso,
        vmlinuz,
        access,
        share,
        key,
        disks,
        rescue_firmwares,
        boot_firmwares,
        dir,
        _lock: lock,
    })
}

/// Chooses KVM or TCG.
fn choose_accel(choice: AccelChoice, vmlinuz: &Path) -> (Accel, String) {
    match choice {
        AccelChoice::Tcg => (Accel::Tcg, "--accel tcg".into()),
        AccelChoice::Kvm => (Accel::Kvm, "--accel kvm".into()),
        AccelChoice::Auto => match qemu::kvm_works(vmlinuz, Duration::from_secs(20)) {
            (true, why) => (Accel::Kvm, why),
            (false, why) => (Accel::Tcg, format!("TCG: {why}")),
        },
    }
}

/// The drill with its inputs checked: runs, reports, cleans up.
pub struct Drill<'a> {
    pub opts: &'a Options,
    pub p: Prepared,
    pub accel: Accel,
    started: Instant,
    phases: Vec<Phase>,
}

/// Runs a prepared drill; returns its report (saved by the caller). A
/// failure of QEMU or of the host is a report with the verdict `error`
/// (exit 2); only cleaning up can fail the call itself.
pub fn run(opts: &Options, p: Prepared, progress: Progress) -> Result<Report> {
    let started_at = util::rfc3339(util::now_epoch());
    let started = Instant::now();
    progress("prepare", "probing KVM");
    let t = Instant::now();
    let (accel, accel_note) = choose_accel(opts.accel, &p.vmlinuz);
    progress("prepare", &format!("using {}: {accel_note}", accel.name()));
    let mut d = Drill {
        opts,
        p,
        accel,
        started,
        phases: vec![Phase {
            name: "accelerator probe".into(),
            seconds: t.elapsed().as_secs_f64(),
        }],
    };
    let mut runs = Vec::new();
    let mut error = None;
    let firmwares = d.p.rescue_firmwares.clone();
    for (i, fw) in firmwares.iter().enumerate() {
        match d.recovery(i, *fw, progress) {
            Ok(run) => {
                let failed = run.failed_step.is_some();
                runs.push(run);
                if failed {
                    break;
                }
            }
            // QEMU or the host failed: the drill could not run.
            Err(e) => {
                error = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let kept = if opts.keep {
        Some(d.kept_line()?)
    } else {
        std::fs::remove_dir_all(&d.p.dir)
            .with_context(|| format!("removing {}", d.p.dir.display()))?;
        None
    };
    let (verdict, failed_step, problem) = match error {
        Some(e) => (Verdict::Error, None, Some(e)),
        None => Report::judge(&runs),
    };
    Ok(Report {
        lifeboat_version: crate::VERSION.into(),
        started_at,
        finished_at: util::rfc3339(util::now_epoch()),
        seconds: d.started.elapsed().as_secs_f64(),
        verdict,
        failed_step,
        problem,
        inputs: d.inputs(accel_note),
        disks: d.p.disks.clone(),
        phases: d.phases,
        runs,
        kept,
    })
}

impl Drill<'_> {
    fn inputs(&self, accel_note: String) -> Inputs {
        Inputs {
            hostname: self.p.layout.host.hostname.clone(),
            layout: self.p.layout_path.display().to_string(),
            backup: self.opts.backup.clone(),
            generation: self.p.generation.clone(),
            rescue_dir: self.opts.rescue_dir.display().to_string(),
            rescue_kernel: self.p.record.kernel_version.clone(),
            rescue_built_at: self.p.record.built_at.clone(),
            accel: self.accel.name().into(),
            accel_note,
            memory_mib: self.opts.memory_mib,
            cpus: self.opts.cpus,
        }
    }

    fn guest<'g>(
        &'g self,
        fw: Firmware,
        vars: Option<&'g Path>,
        media: Media<'g>,
        log: &'g Path,
    ) -> Guest<'g> {
        Guest {
            accel: self.accel,
            firmware: fw,
            vars,
            memory_mib: self.opts.memory_mib,
            cpus: self.opts.cpus,
            media,
            disks: &self.p.disks,
            serial_log: log,
        }
    }

    fn vars_path(&self, what: &str) -> PathBuf {
        self.p.dir.join(format!("{what}-vars.fd"))
    }

    /// The job disk of run `i`.
    fn job_disk(&self, i: usize) -> Result<PathBuf> {
        let (src, image) = job::paths(&self.p.dir, i);
        let answers = job::answers_text(
            &self.p.access,
            Some(&self.p.generation),
            self.p.key.is_some(),
        );
        let autorun = job::autorun_text(&self.p.access);
        let layout = std::fs::read(&self.p.layout_path)
            .with_context(|| format!("reading {}", self.p.layout_path.display()))?;
        let mut files: Vec<(&str, &[u8], u32)> = vec![
            ("autorun.sh", autorun.as_bytes(), 0o755),
            (crate::recover::ANSWERS_FILE, answers.as_bytes(), 0o644),
            ("layout.json", &layout, 0o644),
        ];
        if let Some(k) = &self.p.key {
            files.push(("luks.key", k, 0o600));
        }
        job::make_job_disk(&src, &image, &files)?;
        std::fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
        Ok(image)
    }

    fn phase(&mut self, name: String, seconds: f64) {
        self.phases.push(Phase { name, seconds });
    }

    /// One recovery under `fw` and the boots of its result.
    fn recovery(&mut self, i: usize, fw: Firmware, progress: Progress) -> Result<Run> {
        let name = format!("rescue ({})", firmware_name(fw));
        for d in &self.p.disks {
            let _ = std::fs::remove_file(&d.image);
        }
        machine::create_images(&self.p.disks)?;
        let job = self.job_disk(i)?;
        let vars = self.vars_path(&format!("rescue{i}"));
        if fw == Firmware::Uefi {
            std::fs::copy(qemu::OVMF_VARS, &vars)
                .with_context(|| format!("copying {}", qemu::OVMF_VARS))?;
        }
        let log = self.p.dir.join(format!("rescue{i}-serial.log"));
        let media = Media::Rescue {
            iso: &self.p.iso,
            job: &job,
            share: self.p.share.as_deref(),
            network: matches!(self.p.access, BackupAccess::Url(_)),
        };
        let args = qemu::args(&self.guest(fw, Some(&vars), media, &log))?;
        progress(&name, "booting the rescue image");
        let mut watcher = Watcher::default();
        let fin = qemu::run(&args, self.opts.timeout, &log, &mut |c| {
            if let Console::Line(line) = c {
                if let Some(step) = recovery_line(line) {
                    progress(&name, step);
                }
            }
            watcher.watch(c)
        })?;
        self.phase(format!("{name}: boot and recovery"), fin.seconds);
        qemu_failed(&fin)?;
        let files = JobFiles::read(&job);
        let mut run = judge_recovery(&fin, &files, watcher.seen(), &log, firmware_name(fw));
        progress(
            &name,
            if run.recovered {
                "recovery complete"
            } else {
                "recovery FAILED"
            },
        );
        if run.recovered {
            for bfw in self.p.boot_firmwares.clone() {
                let b = self.boot(i, fw, bfw, &vars, progress)?;
                let failed = !b.passed;
                if failed {
                    run.failed_step = Some(Step::RecoveredBoot);
                    run.detail = b
                        .detail
                        .clone()
                        .map(|d| format!("under {}: {d}", b.firmware));
                }
                run.boots.push(b);
                // Each further boot would wait out its timeout as well.
                if failed {
                    break;
                }
            }
        }
        Ok(run)
    }

    /// Boots the recovered disks under `fw` (after a recovery under
    /// `rescue_fw`, whose NVRAM it takes over; else fresh NVRAM).
    fn boot(
        &mut self,
        i: usize,
        rescue_fw: Firmware,
        fw: Firmware,
        rescue_vars: &Path,
        progress: Progress,
    ) -> Result<Boot> {
        let name = format!("recovered boot ({})", firmware_name(fw));
        let vars = self.vars_path(&format!("boot{i}-{}", firmware_name(fw)));
        if fw == Firmware::Uefi {
            let from = if rescue_fw == Firmware::Uefi {
                rescue_vars
            } else {
                Path::new(qemu::OVMF_VARS)
            };
            std::fs::copy(from, &vars).with_context(|| format!("copying {}", from.display()))?;
        }
        let log = self
            .p
            .dir
            .join(format!("boot{i}-{}-serial.log", firmware_name(fw)));
        let port = self
            .p
            .dir
            .join(format!("boot{i}-{}-report.txt", firmware_name(fw)));
        let media = Media::Disks {
            report: Some(&port),
        };
        let args = qemu::args(&self.guest(fw, Some(&vars), media, &log))?;
        progress(&name, "booting the recovered disks");
        let mut watcher = Watcher::default();
        let fin = qemu::run(&args, self.opts.timeout, &log, &mut |c| watcher.watch(c))?;
        self.phase(name.clone(), fin.seconds);
        qemu_failed(&fin)?;
        let text = std::fs::read_to_string(&port).unwrap_or_default();
        let b = judge_boot(
            &fin,
            unit::parse_report(&text),
            watcher.seen(),
            &log,
            firmware_name(fw),
        );
        progress(
            &name,
            if b.passed {
                "reached its boot target"
            } else {
                "FAILED"
            },
        );
        Ok(b)
    }

    /// The command line that boots the kept disks (no report port: the
    /// drill's unit then does nothing).
    fn kept_line(&self) -> Result<String> {
        let fw = self
            .p
            .boot_firmwares
            .first()
            .copied()
            .unwrap_or(Firmware::Bios);
        let vars = self.vars_path(&format!("boot0-{}", firmware_name(fw)));
        let log = self.p.dir.join("kept-serial.log");
        let args = qemu::args(&self.guest(fw, Some(&vars), Media::Disks { report: None }, &log))?;
        Ok(qemu::shell_line(&args))
    }
}

/// QEMU itself failed (a guest that powers off or reboots exits 0): the
/// drill cannot run.
fn qemu_failed(fin: &qemu::Finished) -> Result<()> {
    match fin.exit_code {
        Some(c) if c != 0 => bail!("QEMU failed (exit {c}): {}", fin.stderr),
        _ => Ok(()),
    }
}

/// A recovery step line of `lifeboat recover` on the console (`[3/12] make
/// ext4 on ...`).
pub fn recovery_line(line: &str) -> Option<&str> {
    let l = line.trim();
    let (head, _) = l.split_once(']')?;
    let (a, b) = head.strip_prefix('[')?.split_once('/')?;
    (a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok()).then_some(l)
}

/// The last lines of a serial log, for a failure's detail.
fn console_tail(log: &Path, n: usize) -> String {
    plain_tail(&std::fs::read(log).unwrap_or_default(), n)
}

/// The last `n` lines of console output as plain text: terminal escape
/// sequences and the frame of a boot menu removed, control characters and
/// blanks collapsed, at most 300 characters.
pub fn plain_tail(data: &[u8], n: usize) -> String {
    let plain = console::plain_text(&String::from_utf8_lossy(data));
    let lines: Vec<String> = plain
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        // Lines without a letter or digit are a menu's frame.
        .filter(|l| l.chars().any(char::is_alphanumeric))
        .collect();
    let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
    let skip = tail.chars().count().saturating_sub(300);
    tail.chars().skip(skip).collect()
}

/// What the job disk and QEMU say about one recovery.
pub fn judge_recovery(
    fin: &qemu::Finished,
    files: &JobFiles,
    seen: Option<&Seen>,
    log: &Path,
    fw: &str,
) -> Run {
    let mut run = Run {
        firmware: fw.to_string(),
        recovered: false,
        recovery_seconds: fin.seconds,
        recovery_report: files
            .report
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok()),
        boots: Vec::new(),
        failed_step: None,
        detail: None,
    };
    let timed_out = if fin.timed_out { " (timed out)" } else { "" };
    let (step, detail) = if let (false, Some(seen)) = (files.started, seen) {
        (
            Step::RescueBoot,
            format!("the rescue image stopped: {}", seen.verdict()),
        )
    } else if !files.started {
        (
            Step::RescueBoot,
            format!(
                "the rescue image did not run the drill's job{timed_out}; console: {}",
                console_tail(log, 3)
            ),
        )
    } else if files.share_failed {
        (
            Step::RescueBoot,
            "the rescue guest could not mount the backup share (9p)".to_string(),
        )
    } else if files.plan_rc != Some(0) {
        let none = files.disks_seen.as_ref().is_some_and(Vec::is_empty);
        let what = if none {
            "no target disk found: the rescue system sees no disk but its job disk \
             (the rescue image lacks the driver of the disks' bus?)"
        } else {
            "no plan"
        };
        (
            Step::Mapping,
            format!("{what}{timed_out}: {}", job::log_tail(&files.plan_err, 2)),
        )
    } else if files.recover_rc == Some(0) {
        run.recovered = true;
        return run;
    } else {
        let done = files
            .journal
            .as_deref()
            .map(job::done_steps)
            .unwrap_or_default();
        match files.plan.as_deref().map(|p| job::failed_step(p, &done)) {
            Some(Ok((s, title))) => (
                s,
                format!("{title}{timed_out}: {}", job::log_tail(&files.log, 2)),
            ),
            _ => (
                Step::Disks,
                format!(
                    "recovery failed{timed_out}: {}",
                    job::log_tail(&files.log, 2)
                ),
            ),
        }
    };
    let detail = match seen {
        Some(s) if files.started => format!("{detail}; the console showed {}", s.verdict()),
        _ => detail,
    };
    run.failed_step = Some(step);
    run.detail = Some(detail);
    run
}

/// What one boot of the recovered disks showed.
pub fn judge_boot(
    fin: &qemu::Finished,
    report: Option<unit::BootReport>,
    seen: Option<&Seen>,
    log: &Path,
    fw: &str,
) -> Boot {
    let (passed, detail) = match &report {
        Some(r) if r.reached() => (
            true,
            (!r.failed_units.is_empty())
                .then(|| format!("failed units: {}", r.failed_units.join(" "))),
        ),
        Some(r) => (
            false,
            Some(format!(
                "{} was not reached ({}, state {})",
                r.target, r.active, r.state
            )),
        ),
        None if seen.is_some() => (false, seen.map(Seen::verdict)),
        None if fin.timed_out => (
            false,
            Some(format!(
                "no boot report within the timeout; console: {}",
                console_tail(log, 3)
            )),
        ),
        None => (
            false,
            Some(format!(
                "the guest stopped without a boot report; console: {}",
                console_tail(log, 3)
            )),
        ),
    };
    Boot {
        firmware: fw.to_string(),
        passed,
        seconds: fin.seconds,
        report,
        detail,
    }
}

/// Writes the report into the state folder; returns its path.
pub fn save(report: &Report, state_dir: &Path) -> Result<PathBuf> {
    let epoch = util::parse_rfc3339(&report.started_at).unwrap_or_else(|_| util::now_epoch());
    report::Store::new(state_dir).save(report, epoch)
}

/// The exit code for a report.
pub fn exit_code(r: &Report) -> u8 {
    r.verdict.exit_code()
}

#[cfg(test)]
pub(crate) mod tests;
