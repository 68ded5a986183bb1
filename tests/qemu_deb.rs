//! QEMU tier: the Debian package (scripts/build-deb.sh) in the project's
//! real Debian 12 test system (qemu/build-debian.sh, cached), in one boot
//! without network: `apt install ./lifeboat_*.deb` from the packages the
//! system has, the binary on PATH, the man page where man looks,
//! completions, the units known to systemd, `schedule install` through
//! drop-ins on the package's units, then `apt remove` (state folder and
//! configuration stay) and `apt purge` (configuration and schedule gone,
//! state folder kept).

mod common;

use std::time::Instant;

use common::*;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The job: every check prints `ok: WHAT` after it passed; `set -e` stops
/// at the first that fails.
const JOB: &str = r#"#!/bin/bash
set -euo pipefail
here=$LIFEBOAT_JOB_DIR
cd "$here"
ok() { echo "ok: $*"; echo "time: ${SECONDS} s into the job"; }
echo "== apt install"
apt install -y ./lifeboat_*.deb
ok "apt install"
[ "$(command -v lifeboat)" = /usr/sbin/lifeboat ]
ok "on PATH: $(command -v lifeboat)"
echo "version: $(lifeboat --version)"
[ "$(stat -c %a /var/lib/lifeboat)" = 700 ]
ok "state folder 0700"
echo "== man"
if command -v man >/dev/null; then
    [ "$(man -w lifeboat)" = /usr/share/man/man8/lifeboat.8.gz ]
    MANWIDTH=80 man lifeboat-backup-create | grep 'lifeboat-backup-create' >/dev/null
    ok "man lifeboat (man-db)"
else
    # No man-db in this system: the page is where man-db looks
    # (/usr/share/man, section 8, gzip), and it is a man page.
    zcat /usr/share/man/man8/lifeboat.8.gz | grep '^\.TH lifeboat 8' >/dev/null
    zcat /usr/share/man/man8/lifeboat-backup-create.8.gz | grep '^\.TH lifeboat-backup-create 8' >/dev/null
    ok "man page in /usr/share/man/man8 (no man-db installed)"
fi
echo "== completions"
[ -s /usr/share/bash-completion/completions/lifeboat ]
[ -s /usr/share/zsh/vendor-completions/_lifeboat ]
[ -s /usr/share/fish/vendor_completions.d/lifeboat.fish ]
bash -c '. /usr/share/bash-completion/completions/lifeboat && complete -p lifeboat'
ok "completions"
echo "== units"
systemctl cat lifeboat-snapshot.timer lifeboat-snapshot.service lifeboat-notify@.service >/dev/null
[ "$(systemctl is-enabled lifeboat-snapshot.timer || true)" = disabled ]
ok "units known, timer not enabled by the package"
lifeboat schedule install --on-calendar 'Sun 04:00'
[ -f /etc/systemd/system/lifeboat-snapshot.timer.d/schedule.conf ]
[ ! -e /etc/systemd/system/lifeboat-snapshot.service ]
[ "$(systemctl is-enabled lifeboat-snapshot.timer)" = enabled ]
systemctl is-active --quiet lifeboat-snapshot.timer
systemctl show -p TimersCalendar lifeboat-snapshot.timer | grep 'OnCalendar=Sun \*-\*-\* 04:00:00'
systemctl show -p ExecStart lifeboat-snapshot.service | grep 'argv\[\]=/usr/sbin/lifeboat snapshot ;'
systemctl show -p OnFailure lifeboat-snapshot.service | grep -x 'OnFailure=lifeboat-notify@lifeboat-snapshot.service.service'
lifeboat schedule status
ok "schedule install through drop-ins"
echo "== apt remove"
echo keep >/var/lib/lifeboat/marker
apt remove -y lifeboat
[ ! -e /usr/sbin/lifeboat ]
[ -f /var/lib/lifeboat/marker ]
[ -f /etc/lifeboat/lifeboat.toml ]
dpkg-query -W -f '${db:Status-Abbrev}\n' lifeboat | grep '^rc'
ok "apt remove keeps the state folder and the configuration"
echo "== apt purge"
apt purge -y lifeboat
[ ! -e /etc/lifeboat ]
[ ! -e /etc/systemd/system/lifeboat-snapshot.timer.d ]
[ ! -e /etc/systemd/system/timers.target.wants/lifeboat-snapshot.timer ]
[ -f /var/lib/lifeboat/marker ]
status=$(dpkg-query -W -f '${db:Status-Abbrev}' lifeboat 2>/dev/null || true)
case "$status" in ii* | rc*) echo "still known to dpkg: $status"; exit 1 ;; esac
ok "apt purge removes the configuration and the schedule, keeps the state folder"
echo "== lifeboat job done"
"#;

#[test]
fn debian_package_installs_offline_and_purges() {
    if !is_root() {
        eprintln!("skipped: this test boots the Debian test system; run it as root");
        return;
    }
    let s = Scratch::new("qemu-deb");
    let built = build_debian(&s.join("image"));
    let job = s.join("job");
    std::fs::create_dir_all(&job).unwrap();
    let deb = sh(&format!(
        "{} --binary {} --output {}",
        repo().join("scripts/build-deb.sh").display(),
        lifeboat().display(),
        job.display()
    ));
    assert!(deb.trim().ends_with("_amd64.deb"), "{deb}");
    std::fs::write(job.join("job.sh"), JOB).unwrap();
    let t = Instant::now();
    let check = boot_check(&built.image, None, "bios", &job, 64, &s.join("out"));
    eprintln!("one boot: {:.0} s", t.elapsed().as_secs_f64());
    let log = &check.job_log;
    for line in log.lines() {
        if line.starts_with("ok: ") || line.starts_with("time: ") {
            eprintln!("{line}");
        }
    }
    assert!(
        check.code == 0 && log.contains("== lifeboat job done"),
        "the job failed:\n{}\n{}",
        tail(log, 60),
        tail(&check.serial, 30)
    );
    assert!(
        log.contains(&format!("version: lifeboat {}", env!("CARGO_PKG_VERSION"))),
        "{log}"
    );
    for step in [
        "apt install",
        "on PATH: /usr/sbin/lifeboat",
        "state folder 0700",
        "completions",
        "units known, timer not enabled by the package",
        "schedule install through drop-ins",
        "apt remove keeps the state folder and the configuration",
        "apt purge removes the configuration and the schedule, keeps the state folder",
    ] {
        assert!(
            log.contains(&format!("\nok: {step}\n")),
            "no `ok: {step}`:\n{log}"
        );
    }
    assert!(log.contains("\nok: man "), "no man check:\n{log}");
}
