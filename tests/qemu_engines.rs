//! A machine backed up to an S3 store with restic and recovered from it in
//! the rescue system, over QEMU's user-mode network (the guest reaches the
//! host's loopback S3 server, s3s-fs, at 10.0.2.2).
//!
//! One guest boot: the rescue (built by `mkrescue` from a configuration
//! whose backup.destination is the S3 repository, so it carries restic)
//! brings the network up with DHCP, builds the MBR scenario's system on a
//! virtual disk, backs it up to the repository, wipes the disk and recovers
//! it from the repository; every file is compared. The credentials come
//! from the job disk only: the image is checked to hold none.

mod common;

use std::path::Path;

use common::servers::{self, S3_ACCESS_KEY, S3_SECRET_KEY};
use common::*;

const LIB: &str = include_str!("scenarios/lib.sh");
const PASSWORD: &str = "restic-in-the-rescue-7f3a";

/// The guest's part: build, back up over the network, wipe, recover.
const DRIVER: &str = r#"
run_engine() {
    JA=$(cd "$J" && pwd)
    cat > /tmp/lifeboat.toml <<EOF
[restic]
password_file = "$JA/restic-password"
environment_file = "$JA/aws.env"
options = ["s3.layout=s3legacy"]
EOF
    LB="lifeboat --config /tmp/lifeboat.toml"
    mkdir -p "$SRC"
    build_source
    fill_tree "$SRC"
    tree_sums "$SRC" > "$J/sums-source.txt"
    $LB layout save --root "$SRC" -o /tmp/layout.json
    $LB backup create --root "$SRC" --layout /tmp/layout.json --to "$REPO" --quiet > "$J/backup.log" 2>&1
    teardown_source
    wipe $SOURCE_DISKS
    set +e
    $LB recover --yes --backup "$REPO" --report "$J/report.json" > "$J/recover.log" 2>&1
    echo $? > "$J/recover.rc"
    set -e
    mkdir -p /mnt/check
    mount_tree /mnt/check
    tree_sums /mnt/check > "$J/sums-after.txt"
    umount_tree /mnt/check
}
"#;

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn recover_from_restic_on_s3_over_the_network() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: QEMU tests need root");
        return;
    }
    if !(servers::have("restic") && servers::have(servers::S3S_FS)) {
        return;
    }
    let s = Scratch::new("engine-s3-recover");
    let data = s.join("s3");
    std::fs::create_dir_all(data.join("lifeboat")).unwrap();
    let server = servers::s3_server(&data, &s.join("s3s.log"));
    let port = server.port;
    let guest_repo = format!("restic:s3:http://10.0.2.2:{port}/lifeboat/host1");

    // The repository, made on the host.
    std::fs::write(s.join("password"), PASSWORD).unwrap();
    let init = std::process::Command::new("restic")
        .args(["-o", "s3.layout=s3legacy", "-r"])
        .arg(format!("s3:http://127.0.0.1:{port}/lifeboat/host1"))
        .arg("init")
        .env("RESTIC_PASSWORD_FILE", s.join("password"))
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");

    // The rescue: restic in it because the destination is a restic
    // repository; no password, no keys.
    let cfg = s.join("lifeboat.toml");
    std::fs::write(&cfg, format!("[backup]\ndestination = \"{guest_repo}\"\n")).unwrap();
    let rescue_dir = s.join("rescue");
    let (code, out, err) = run_lifeboat([
        "--config".as_ref(),
        cfg.as_os_str(),
        "mkrescue".as_ref(),
        "--no-iso".as_ref(),
        "--output".as_ref(),
        rescue_dir.as_os_str(),
    ]);
    assert_eq!(code, 0, "mkrescue failed:\n{out}\n{err}");
    let listing = sh(&format!(
        "zstd -dc '{}' | cpio -it --quiet",
        rescue_dir.join("initrd").display()
    ));
    for want in ["usr/bin/restic", "etc/ssl/certs/ca-certificates.crt"] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} not in the image"
        );
    }
    let leaked = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc '{}' | grep -c -a -e '{PASSWORD}' -e '{S3_SECRET_KEY}'",
            rescue_dir.join("initrd").display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&leaked.stdout).trim(), "0");

    // The job disk: the scenario, the driver and the credentials.
    let job_dir = s.join("job");
    std::fs::create_dir_all(&job_dir).unwrap();
    std::fs::write(job_dir.join("lib.sh"), LIB).unwrap();
    std::fs::write(
        job_dir.join("scenario.sh"),
        include_str!("scenarios/mbr.sh"),
    )
    .unwrap();
    std::fs::write(job_dir.join("restic-password"), PASSWORD).unwrap();
    std::fs::write(
        job_dir.join("aws.env"),
        format!("AWS_ACCESS_KEY_ID={S3_ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}\n"),
    )
    .unwrap();
    std::fs::write(
        job_dir.join("autorun.sh"),
        format!(
            "#!/bin/sh\nhere=$(dirname \"$0\")\n. \"$here/lib.sh\"\n. \"$here/scenario.sh\"\nREPO={guest_repo}\n{DRIVER}\nrun_engine\n"
        ),
    )
    .unwrap();
    let job = JobDisk::from_dir(&job_dir, &s.join("job.img"), 64);
    let img = blank_disk(&s.join("disk0.img"), 1024);
    let run = Vm::new(
        Boot::Kernel {
            vmlinuz: rescue_dir.join("vmlinuz"),
            initrd: rescue_dir.join("initrd"),
            append: "lifeboat.poweroff lifeboat.net=dhcp".into(),
        },
        &s.join("serial.log"),
    )
    .memory(1536)
    .timeout(1500)
    .user_net()
    .disk(Disk::virtio(&img).serial("SRC-0"))
    .disk(Disk::virtio(&job.image).serial("JOB"))
    .run();
    let out = job.read_back(&s.join("out"));
    assert!(
        !run.timed_out,
        "guest did not finish:\n{}",
        tail(&run.log, 60)
    );
    let rc = std::fs::read_to_string(out.join("recover.rc")).unwrap_or_else(|_| {
        panic!(
            "no recovery: autorun log:\n{}\nbackup log:\n{}\nconsole:\n{}",
            std::fs::read_to_string(out.join("autorun.log")).unwrap_or_default(),
            std::fs::read_to_string(out.join("backup.log")).unwrap_or_default(),
            tail(&run.log, 40)
        )
    });
    assert_eq!(
        rc.trim(),
        "0",
        "recover failed:\n{}",
        tail(&read(&out, "recover.log"), 60)
    );
    let want = read(&out, "sums-source.txt");
    assert!(want.lines().count() > 200, "the source tree was written");
    assert_same_lines(&read(&out, "sums-after.txt"), &want);
    let report: serde_json::Value = serde_json::from_str(&read(&out, "report.json")).unwrap();
    assert_eq!(report["ok"], true, "report not ok");
    // The backup went to the host's S3 store: one metadata snapshot, one
    // per file system (/ and /srv).
    let snaps = std::fs::read_dir(data.join("lifeboat/host1/snapshot"))
        .unwrap()
        .count();
    assert_eq!(snaps, 3, "snapshots in the S3 store");
    eprintln!("recovered from S3 in {:.0}s", run.seconds);
}
