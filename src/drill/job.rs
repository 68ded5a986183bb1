//! The job disk of the rescue guest: `autorun.sh` (mount the backup share,
//! plan, `recover --unattended --drill`, power off), the answers file
//! `recover.toml`, the layout and the key file; and reading the outcome
//! back from it without mounting it (debugfs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::qemu::BACKUP_TAG;
use super::report::Step;
use crate::exec::{shell_quote, Cmd};
use crate::plan::{Plan, Step as PlanStep};

/// Where autorun.sh mounts the backup share in the rescue guest.
pub const SHARE_DIR: &str = "/run/lifeboat/backup";
/// Size of the job disk.
pub const JOB_DISK_MIB: u64 = 64;
/// Marker lines of autorun.sh on the console.
pub const STARTED: &str = "lifeboat-drill: recovery starts";

/// Where the backup comes from inside the rescue guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupAccess {
    /// A folder of the host, shared read-only over 9p.
    Share,
    /// An nfs:// or cifs:// URL the guest mounts over user networking.
    Url(String),
}

impl BackupAccess {
    pub fn of(spec: &str) -> BackupAccess {
        if spec.contains("://") {
            BackupAccess::Url(spec.to_string())
        } else {
            BackupAccess::Share
        }
    }

    fn spec(&self) -> &str {
        match self {
            BackupAccess::Share => SHARE_DIR,
            BackupAccess::Url(u) => u,
        }
    }
}

/// The answers file: layout and key file beside it, the backup, the
/// generation.
pub fn answers_text(access: &BackupAccess, generation: Option<&str>, key_file: bool) -> String {
    let mut t = toml::Table::new();
    t.insert("layout".into(), "layout.json".into());
    t.insert("backup".into(), access.spec().into());
    if let Some(g) = generation {
        t.insert("generation".into(), g.into());
    }
    if key_file {
        t.insert("key_file".into(), "luks.key".into());
    }
    toml::to_string(&t).expect("a table of strings serializes")
}

/// autorun.sh: runs in the rescue guest from the job disk (cwd), writes
/// plan.json, plan.rc, recover.rc and recovery-report.json there, and
/// powers off.
pub fn autorun_text(access: &BackupAccess) -> String {
    let mount = match access {
        BackupAccess::Share => format!(
            "mkdir -p {SHARE_DIR}\n\
             mount -t 9p -o trans=virtio,version=9p2000.L,ro,nosuid,nodev,noexec \
             {BACKUP_TAG} {SHARE_DIR} || {{ echo share > drill-failed; finish; }}\n"
        ),
        BackupAccess::Url(_) => "for dev in /sys/class/net/*; do\n\
             \x20   name=${dev##*/}\n\
             \x20   [ \"$name\" = lo ] && continue\n\
             \x20   ip link set \"$name\" up\n\
             \x20   udhcpc -i \"$name\" -s /etc/lifeboat/udhcpc.script -n -q -t 5 -T 2 >/dev/null 2>&1\n\
             done\n"
            .to_string(),
    };
    // `lifeboat plan` looks at the newest generation: its steps are those
    // of any generation (sizes aside), which is all the drill reads.
    format!(
        "# lifeboat drill: recovery as on the day, then power off.\n\
         job=$(pwd)\n\
         finish() {{ sync; cd /; umount {SHARE_DIR} 2>/dev/null; poweroff -f; }}\n\
         echo '{STARTED}'\n\
         {mount}\
         {disks}\
         lifeboat plan --json --layout \"$job/layout.json\" --backup {backup} \
         > \"$job/plan.json\" 2> \"$job/plan.err\"\n\
         echo $? > \"$job/plan.rc\"\n\
         cat \"$job/plan.err\"\n\
         lifeboat recover --unattended --drill --report \"$job/recovery-report.json\"\n\
         echo $? > \"$job/recover.rc\"\n\
         finish\n",
        backup = shell_quote(access.spec()),
        disks = DISKS_SEEN_SH,
    )
}

/// The file of autorun.sh that lists the disks the rescue system sees.
pub const DISKS_SEEN: &str = "disks-seen.txt";

/// Lists the rescue's disks but the job disk, CDs, loop and RAM disks into
/// DISKS_SEEN: none at all means its image lacks the scratch disks' driver.
const DISKS_SEEN_SH: &str = "for b in /sys/block/*; do\n\
     \x20   n=${b##*/}\n\
     \x20   case $n in loop*|ram*|sr*|zram*) continue ;; esac\n\
     \x20   grep -q \"^/dev/$n $job \" /proc/mounts || echo \"$n\"\n\
     done > \"$job/disks-seen.txt\"\n";

/// The disks the rescue saw (DISKS_SEEN), `None` when it did not say.
pub fn disks_seen(text: Option<&str>) -> Option<Vec<String>> {
    text.map(|t| t.split_whitespace().map(str::to_string).collect())
}

/// Writes the job disk's files into `src` and makes `image` from them
/// (ext4 labelled LIFEBOAT-AUTO, made without mounting).
pub fn make_job_disk(src: &Path, image: &Path, files: &[(&str, &[u8], u32)]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir(src).with_context(|| format!("creating {}", src.display()))?;
    for (name, data, mode) in files {
        let p = src.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(*mode)
            .open(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        std::io::Write::write_all(&mut f, data)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "LIFEBOAT-AUTO", "-d"])
        .arg(src)
        .arg(image)
        .arg(format!("{JOB_DISK_MIB}M"))
        .run()
        .with_context(|| format!("making the job disk {}", image.display()))?;
    Ok(())
}

/// One file of the job disk, `None` when it is not there.
pub fn read_file(image: &Path, name: &str) -> Option<String> {
    let stat = Cmd::new("debugfs")
        .args(["-R", &format!("stat /{name}")])
        .arg(image)
        .output_any()
        .ok()?;
    if String::from_utf8_lossy(&stat.stderr).contains("not found") {
        return None;
    }
    let out = Cmd::new("debugfs")
        .args(["-R", &format!("cat /{name}")])
        .arg(image)
        .run()
        .ok()?;
    Some(out.stdout_str())
}

/// What the job disk says about the recovery.
#[derive(Debug, Clone, Default)]
pub struct JobFiles {
    pub started: bool,
    pub share_failed: bool,
    pub plan_rc: Option<i32>,
    pub plan_err: String,
    pub plan: Option<String>,
    pub recover_rc: Option<i32>,
    /// The disks the rescue system saw besides its job disk.
    pub disks_seen: Option<Vec<String>>,
    pub journal: Option<String>,
    pub report: Option<String>,
    pub log: String,
}

impl JobFiles {
    /// Reads the job disk after the guest stopped. The guest powers off
    /// with the disk still mounted (the console logger holds it): e2fsck
    /// replays the journal first, which debugfs would not.
    pub fn read(image: &Path) -> JobFiles {
        if let Err(e) = Cmd::new("e2fsck")
            .args(["-fy"])
            .arg(image)
            .ok_codes(&[1, 2])
            .run()
        {
            log::warn!("checking the job disk {}: {e:#}", image.display());
        }
        let rc = |n: &str| read_file(image, n).and_then(|t| t.trim().parse().ok());
        let log = read_file(image, "autorun.log");
        JobFiles {
            started: log.as_deref().is_some_and(|l| l.contains(STARTED)),
            share_failed: read_file(image, "drill-failed").is_some(),
            plan_rc: rc("plan.rc"),
            plan_err: read_file(image, "plan.err").unwrap_or_default(),
            plan: read_file(image, "plan.json"),
            recover_rc: rc("recover.rc"),
            disks_seen: disks_seen(read_file(image, DISKS_SEEN).as_deref()),
            journal: read_file(image, "recover-state.json"),
            report: read_file(image, "recovery-report.json"),
            log: log.unwrap_or_default(),
        }
    }
}

/// The drill step a recovery step belongs to.
pub fn step_of(s: &PlanStep) -> Step {
    match s {
        PlanStep::Partition { .. }
        | PlanStep::CreateMd { .. }
        | PlanStep::FormatLuks { .. }
        | PlanStep::CreateVg { .. }
        | PlanStep::Mkfs { .. }
        | PlanStep::Mkswap { .. }
        | PlanStep::Mount { .. } => Step::Disks,
        PlanStep::Restore { .. } => Step::Restore,
        PlanStep::FixConfig { .. } | PlanStep::Network { .. } | PlanStep::Initramfs => Step::Fixup,
        PlanStep::Migrate { .. } | PlanStep::Bootloader { .. } => Step::Bootloader,
        PlanStep::Verify => Step::Verify,
    }
}

/// The step that failed, from the plan and the record of completed steps
/// (`recover-state.json`): the first step not recorded as done.
pub fn failed_step(plan_json: &str, done: &[String]) -> Result<(Step, String)> {
    let plan: Plan =
        serde_json::from_str(plan_json).context("reading the plan of the rescue guest")?;
    for s in &plan.steps {
        let id = crate::recover::journal::step_id(s);
        if !done.contains(&id) {
            return Ok((step_of(s), crate::plan::render::step_title(s)));
        }
    }
    Ok((Step::Verify, "the checks after recovery".into()))
}

/// The ids in a `recover-state.json`.
pub fn done_steps(journal: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(journal)
        .ok()
        .and_then(|v| {
            v["done"].as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The last lines of the recovery's output, for the report.
/// A guest killed at its timeout leaves a log whose end was never written
/// (NUL bytes): control characters other than newlines are dropped.
pub fn log_tail(log: &str, n: usize) -> String {
    let clean: String = log
        .chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect();
    crate::exec::tail(clean.as_bytes(), n)
}

/// Paths of the job disk's source folder and image under `work`.
pub fn paths(work: &Path, run: usize) -> (PathBuf, PathBuf) {
    (
        work.join(format!("job{run}-src")),
        work.join(format!("job{run}.img")),
    )
}
