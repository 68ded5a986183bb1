//! QEMU tier: the rescue image copied off the host over NFS and CIFS for
//! real. This host's kernel has no NFS or CIFS client, so the client is
//! the Debian 12 test system (qemu/build-debian.sh, cached) with the
//! kernel's nfs and cifs modules and nfs-common/cifs-utils unpacked at
//! test time from the .debs of scripts/install-deps.sh; the servers run in
//! userspace on this host's loopback (NFS-Ganesha with the VFS FSAL,
//! NFSv4 only; smbd with its own passdb), reached from the guest at
//! 10.0.2.2 through user-mode networking. One boot does both protocols.
//!
//! The image is built on the host (`mkrescue --no-iso`, its layout built
//! in) and put on the job disk; in the guest `lifeboat mkrescue
//! --copy-only` copies it, as an admin retries a copy after fixing the
//! share. Checked on the host: the copy folders `lifeboat-src-STAMP` hold
//! the image, rescue.json and the layout byte for byte; `keep_copies`
//! removed this host's oldest copy only; a wrong password and a missing
//! export fail with a warning, the local image intact.

mod common;

use std::path::Path;
use std::time::Instant;

use common::copies::{assert_copy_of, entries};
use common::servers;
use common::*;

/// The guest's NFS and CIFS clients, downloaded by scripts/install-deps.sh.
const CLIENT_DEBS: &str = "/var/cache/lifeboat-test/debs/netfs-client";
/// The Samba password of root in the test's own passdb.
const SMB_PASSWORD: &str = "offhost-Test-pw1";
/// The Debian test system's host name (qemu/build-debian.sh).
const GUEST_HOST: &str = "lifeboat-src";

/// The job. `copy NAME DEST OPTIONS` runs `mkrescue --copy-only` to DEST
/// with `rescue.mount_options` = OPTIONS and `status --json` after it,
/// and keeps exit code, output and status in `results/NAME.*`.
const JOB: &str = r#"#!/bin/bash
set -uo pipefail
here=$LIFEBOAT_JOB_DIR
cd "$here"
ok() { echo "ok: $*"; echo "time: ${SECONDS} s into the job"; }
echo "time: $(cut -d' ' -f1 /proc/uptime) s since boot at the job's start"
die() { echo "FAILED: $*"; exit 1; }
install -m 0755 "$here/lifeboat" /usr/local/sbin/lifeboat
# The NFS and CIFS clients: the .debs of what this system lacks, unpacked
# (their configure step, perl and debconf for config files, rpcbind and
# statd that NFSv4 does not use, takes 80 s under TCG; mount.nfs and
# mount.cifs need only their files and libraries).
debs=()
for d in "$here"/debs/*.deb; do
    p=$(dpkg-deb -f "$d" Package)
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || debs+=("$d")
done
dpkg --force-unsafe-io --unpack "${debs[@]}" > dpkg.log 2>&1 || { cat dpkg.log; die "dpkg --unpack"; }
ldconfig
command -v mount.nfs mount.cifs || die "no mount.nfs or mount.cifs"
ok "nfs-common and cifs-utils unpacked (${#debs[@]} packages)"
nic=$(for n in /sys/class/net/*; do [ -e "$n/device" ] && basename "$n"; done | head -n 1)
[ -n "$nic" ] || die "no network interface"
busybox ip link set "$nic" up
busybox ip addr add 10.0.2.15/24 dev "$nic"
ok "10.0.2.15 on $nic"
# The layout where rescue.json says it is, as on the machine that built it.
layout=$(cat layout-path)
mkdir -p "$(dirname "$layout")"
cp layout.json "$layout"
printf 'username=root\npassword=%s\n' "$(cat smb-password)" > /root/smb.cred
printf 'username=root\npassword=wrong-password\n' > /root/smb-wrong.cred
chmod 0600 /root/smb.cred /root/smb-wrong.cred
mkdir -p /etc/lifeboat results
copy() {
    printf '[rescue]\noutput = "%s/rescue"\ndestination = "%s"\nkeep_copies = 2\nmount_options = "%s"\n' \
        "$here" "$2" "$3" > /etc/lifeboat/lifeboat.toml
    lifeboat -v mkrescue --copy-only > "results/$1.out" 2> "results/$1.err"
    echo $? > "results/$1.rc"
    lifeboat status --json > "results/$1.status.json" 2> "results/$1.status.err"
    ok "copy $1: exit $(cat "results/$1.rc")"
}
nfs="vers=4.1,port=$(cat nfs-port)"
cifs="credentials=/root/smb.cred,port=$(cat smb-port)"
copy cifs-wrong-password cifs://10.0.2.2/rescue/lifeboat "credentials=/root/smb-wrong.cred,port=$(cat smb-port)"
copy cifs cifs://10.0.2.2/rescue/lifeboat "$cifs"
copy nfs-no-export nfs://10.0.2.2/nowhere/rescue "$nfs"
copy nfs nfs://10.0.2.2/export/rescue "$nfs"
findmnt -rn -t nfs,nfs4,cifs > results/mounts-left || true
sha256sum rescue/vmlinuz rescue/initrd > results/local.sha256
echo "== lifeboat job done"
"#;

/// What each share holds before the copy: two older copies of the guest,
/// another host's copy, a file.
fn populate(dir: &Path) {
    for name in [
        format!("{GUEST_HOST}-20200101T000000Z"),
        format!("{GUEST_HOST}-20210101T000000Z"),
        "otherhost-20200101T000000Z".to_string(),
    ] {
        std::fs::create_dir_all(dir.join(&name)).unwrap();
        std::fs::write(dir.join(&name).join("initrd"), format!("{name}\n")).unwrap();
    }
    std::fs::write(dir.join("README"), "shared folder\n").unwrap();
}

/// The result files of one `copy` step of the job.
struct Step {
    rc: String,
    out: String,
    err: String,
    status: serde_json::Value,
}

fn step(results: &Path, name: &str) -> Step {
    let read = |ext: &str| {
        std::fs::read_to_string(results.join(format!("{name}.{ext}")))
            .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"))
    };
    let status = read("status.json");
    Step {
        rc: read("rc").trim().to_string(),
        out: read("out"),
        err: read("err"),
        status: serde_json::from_str(&status)
            .unwrap_or_else(|e| panic!("{name}: status --json: {e}\n{status}")),
    }
}

/// The state of the status problem about the copy, if any.
fn copy_problem(j: &serde_json::Value) -> Option<String> {
    j["verdict"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["text"]
                .as_str()
                .unwrap()
                .contains("copying the rescue image")
        })
        .map(|p| p["state"].as_str().unwrap().to_string())
}

/// A failed copy: exit 2, the warning naming the destination, the error,
/// `status` warning with the copy missing.
fn assert_failed(s: &Step, dest: &str, why: &str) {
    assert_eq!(s.rc, "2", "{dest}:\n{}\n{}", s.out, s.err);
    assert!(
        s.err.contains(&format!(
            "copying the rescue image to {dest} failed (the image in"
        )),
        "{}",
        s.err
    );
    assert!(s.err.contains(why), "{}", s.err);
    assert_eq!(s.status["facts"]["rescue_copy"]["state"], "missing");
    assert_eq!(copy_problem(&s.status).as_deref(), Some("WARNING"));
    assert_eq!(s.status["metrics"]["lifeboat_rescue_copy_current"], 0);
}

/// A copy made: exit 0, the copy folder named on stdout (the 2020 copy
/// removed) holding the image byte for byte, `status` current; the share
/// holds the new copy, the newest older one and the others' entries.
fn assert_copied(s: &Step, dest: &str, dir: &Path, output: &Path, built: &str) {
    assert_eq!(s.rc, "0", "{dest}:\n{}\n{}", s.out, s.err);
    let line = s
        .out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("rescue image of {built} copied to {dest}: ")))
        .unwrap_or_else(|| panic!("no copy line:\n{}\n{}", s.out, s.err));
    let old = format!("{GUEST_HOST}-20200101T000000Z");
    let (name, removed) = line.split_once(' ').unwrap_or((line, ""));
    assert_eq!(removed, format!("(removed {old})"), "{line}");
    let stamp = lifeboat::util::stamp(lifeboat::util::parse_rfc3339(built).unwrap());
    assert_eq!(name, format!("{GUEST_HOST}-{stamp}"));
    assert_copy_of(&dir.join(name), output);
    let mut want = vec![
        "README".to_string(),
        format!("{GUEST_HOST}-20210101T000000Z"),
        name.to_string(),
        "otherhost-20200101T000000Z".into(),
    ];
    want.sort();
    assert_eq!(entries(dir), want, "keep_copies = 2 in {}", dir.display());
    assert_eq!(
        std::fs::read_to_string(dir.join("README")).unwrap(),
        "shared folder\n"
    );
    for other in [
        "otherhost-20200101T000000Z",
        &format!("{GUEST_HOST}-20210101T000000Z"),
    ] {
        assert_eq!(entries(&dir.join(other)), vec!["initrd".to_string()]);
        assert_eq!(
            std::fs::read_to_string(dir.join(other).join("initrd")).unwrap(),
            format!("{other}\n")
        );
    }
    let c = &s.status["facts"]["rescue_copy"];
    assert_eq!(c["state"], "copied", "{:#}", s.status);
    assert_eq!(c["current"], true);
    assert_eq!(c["copy"]["name"], name);
    assert_eq!(copy_problem(&s.status), None, "{:#}", s.status);
    assert_eq!(s.status["metrics"]["lifeboat_rescue_copy_current"], 1);
}

#[test]
fn rescue_image_copies_over_nfs_and_cifs_in_a_guest() {
    require_root!("this test boots the Debian test system; run it as root");
    for program in [
        servers::GANESHA_ROOT,
        "/usr/sbin/smbd",
        "/usr/bin/pdbedit",
        CLIENT_DEBS,
    ] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: run scripts/install-deps.sh"
        );
    }
    let t0 = Instant::now();
    let s = Scratch::new("qemu-offhost");
    let built = build_debian(&s.join("image"));

    // The image, built here with its layout.
    let job = s.join("job");
    std::fs::create_dir_all(job.join("results")).unwrap();
    let layout = s.join("layout/layout.json");
    std::fs::create_dir_all(layout.parent().unwrap()).unwrap();
    std::fs::copy(repo().join("tests/fixtures/debian12-layout.json"), &layout).unwrap();
    let output = job.join("rescue");
    let (code, out, err) = run_lifeboat([
        "--config".as_ref(),
        "/dev/null".as_ref(),
        "mkrescue".as_ref(),
        "--no-iso".as_ref(),
        "--output".as_ref(),
        output.as_os_str(),
        "--layout".as_ref(),
        layout.as_os_str(),
    ]);
    assert_eq!(code, 0, "mkrescue:\n{out}\n{err}");
    let rec = lifeboat::rescue::BuildRecord::load(&output).unwrap();
    assert_eq!(rec.layout.as_deref(), Some(layout.to_str().unwrap()));
    let local: Vec<(String, String)> = rec
        .files
        .iter()
        .map(|f| (f.name.clone(), f.sha256.clone()))
        .collect();

    // The servers.
    let nfs_dir = s.join("nfs");
    let nfs_copies = nfs_dir.join("rescue");
    let smb_dir = s.join("smb-share");
    let smb_copies = smb_dir.join("lifeboat");
    populate(&nfs_copies);
    populate(&smb_copies);
    let nfs = servers::nfs_ganesha(&nfs_dir, &s.join("ganesha"));
    let smb = servers::smbd("rescue", &smb_dir, SMB_PASSWORD, &s.join("samba"));

    // The job disk.
    std::fs::copy(lifeboat(), job.join("lifeboat")).unwrap();
    std::fs::copy(&layout, job.join("layout.json")).unwrap();
    std::fs::write(job.join("layout-path"), layout.to_str().unwrap()).unwrap();
    std::fs::write(job.join("smb-password"), SMB_PASSWORD).unwrap();
    std::fs::write(job.join("nfs-port"), nfs.port.to_string()).unwrap();
    std::fs::write(job.join("smb-port"), smb.port.to_string()).unwrap();
    sh(&format!("cp -r '{CLIENT_DEBS}' '{}/debs'", job.display()));
    std::fs::write(job.join("job.sh"), JOB).unwrap();

    let t = Instant::now();
    let check = boot_check_env(
        &built.image,
        None,
        "bios",
        &job,
        256,
        &s.join("out"),
        &[
            ("BOOT_CHECK_NETDEV", "user,id=n0".to_string()),
            ("BOOT_CHECK_NIC", "virtio-net-pci,netdev=n0".to_string()),
        ],
    );
    eprintln!("one boot: {:.0} s", t.elapsed().as_secs_f64());
    drop((nfs, smb));
    let log = &check.job_log;
    for line in log
        .lines()
        .filter(|l| l.starts_with("ok: ") || l.starts_with("time: "))
    {
        eprintln!("{line}");
    }
    assert!(
        check.code == 0 && log.contains("== lifeboat job done"),
        "the job failed:\n{}\n{}",
        tail(log, 60),
        tail(&check.serial, 30)
    );
    let results = s.join("out/job/results");
    let guest_output = s.join("out/job/rescue");

    // CIFS: a wrong password, then the copy.
    let cifs = "cifs://10.0.2.2/rescue/lifeboat";
    let wrong = step(&results, "cifs-wrong-password");
    assert_failed(&wrong, cifs, "cannot mount rescue.destination");
    let good = step(&results, "cifs");
    assert_copied(&good, cifs, &smb_copies, &guest_output, &rec.built_at);
    // The password went through the credentials file, never a command line.
    assert!(
        good.err.contains("credentials=/root/smb.cred"),
        "{}",
        good.err
    );
    for s in [&wrong, &good] {
        assert!(!s.err.contains(SMB_PASSWORD) && !s.err.contains("wrong-password"));
    }

    // NFS: an export that is not there, then the copy.
    let missing = step(&results, "nfs-no-export");
    assert_failed(
        &missing,
        "nfs://10.0.2.2/nowhere/rescue",
        "cannot mount rescue.destination",
    );
    let good = step(&results, "nfs");
    assert_copied(
        &good,
        "nfs://10.0.2.2/export/rescue",
        &nfs_copies,
        &guest_output,
        &rec.built_at,
    );

    // Nothing stayed mounted; the local image is the one built.
    assert_eq!(
        std::fs::read_to_string(results.join("mounts-left")).unwrap(),
        ""
    );
    for (name, sha) in &local {
        assert_eq!(
            &lifeboat::rescue::sha256_file(&guest_output.join(name)).unwrap(),
            sha,
            "{name} of the local image changed"
        );
    }
    eprintln!("whole test: {:.0} s", t0.elapsed().as_secs_f64());
}
