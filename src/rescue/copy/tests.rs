use std::path::Path;

use super::*;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn plan_named(name: &str) -> Plan {
    Plan {
        host: "web1".into(),
        name: name.into(),
        items: Vec::new(),
    }
}

#[test]
fn copy_names_are_host_and_stamp() {
    assert!(is_copy_of("web1", "web1-20261126T055726Z"));
    for n in [
        "web1-20261126T055726",
        "web10-20261126T055726Z",
        "web1-2026112XT055726Z",
        "web1-20261126T055726Z.old",
        ".lifeboat-copy-ab",
        "web1",
    ] {
        assert!(!is_copy_of("web1", n), "{n}");
    }
    check_host("web1.example.com").unwrap();
    for bad in ["", "..", "a/b", "-x", ".x", "a b", "a\nb", "é"] {
        assert!(check_host(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_newest_copies_of_this_host_are_kept() {
    let all = names(&[
        "web1-20261101T000000Z",
        "web1-20261103T000000Z",
        "web1-20261102T000000Z",
        "web2-20261001T000000Z",
        "notes",
    ]);
    let p = plan_named("web1-20261104T000000Z");
    assert_eq!(
        expired(&all, &p, 2),
        names(&["web1-20261101T000000Z", "web1-20261102T000000Z"])
    );
    assert_eq!(expired(&all, &p, 4), Vec::<String>::new());
    // keep = 1: only the new one.
    assert_eq!(expired(&all, &p, 1).len(), 3);
    // The new copy is never removed, even when an older clock made a
    // "newer" name.
    let p = plan_named("web1-20261001T000000Z");
    assert!(!expired(&all, &p, 1).contains(&p.name));
}

#[test]
fn destinations_parse() {
    assert_eq!(
        Target::parse("/srv/rescue").unwrap(),
        Target::Dir("/srv/rescue".into())
    );
    assert!(matches!(
        Target::parse("nfs://nas/export/rescue").unwrap(),
        Target::Share(Share::Nfs { .. })
    ));
    assert!(matches!(
        Target::parse("cifs://nas/share/rescue").unwrap(),
        Target::Share(Share::Cifs { .. })
    ));
    assert!(matches!(
        Target::parse("sftp://lb@nas/srv/rescue").unwrap(),
        Target::Sftp(_)
    ));
    let e = Target::parse("restic:/srv/r").unwrap_err().to_string();
    assert!(e.contains("is a repository"), "{e}");
    let e = Target::parse("ftp://nas/r").unwrap_err().to_string();
    assert!(e.contains("unsupported rescue.destination"), "{e}");
}

/// The host kernel here has no NFS or CIFS: the commands are checked as
/// text (the directory copy they lead to is tested for real).
#[test]
fn share_mount_commands() {
    let nfs = Share::parse("nfs://nas/export/rescue").unwrap();
    let c = mount_command(
        &nfs,
        Path::new("/tmp/lifeboat-rescue-copy-x"),
        Some("vers=4.2"),
    )
    .unwrap();
    assert!(
        c.to_string().ends_with(
            "mount -t nfs -o vers=4.2,nosuid,nodev,noexec nas:/export/rescue /tmp/lifeboat-rescue-copy-x"
        ),
        "{c}"
    );
    assert_eq!(mount_helper(&nfs), "mount.nfs");
    let cifs = Share::parse("cifs://nas/share/rescue/web").unwrap();
    let c = mount_command(&cifs, Path::new("/tmp/m"), Some("credentials=/root/.cifs")).unwrap();
    assert!(
        c.to_string().ends_with(
            "mount -t cifs -o credentials=/root/.cifs,nosuid,nodev,noexec //nas/share /tmp/m"
        ),
        "{c}"
    );
    assert_eq!(mount_helper(&cifs), "mount.cifs");
    assert_eq!(crate::exec::package_of("mount.nfs"), "nfs-common");
    assert_eq!(crate::exec::package_of("mount.cifs"), "cifs-utils");
}

/// A plan of three files in a scratch "output" folder.
fn scratch_plan(dir: &Path) -> Plan {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut items = Vec::new();
    for (name, data) in [
        ("vmlinuz", &b"kernel"[..]),
        ("initrd", b"initrd bytes"),
        ("rescue.json", b"{}"),
    ] {
        std::fs::write(out.join(name), data).unwrap();
        let (sha256, bytes) = util::hash_file(&out.join(name)).unwrap();
        items.push(Item {
            name: name.into(),
            src: out.join(name),
            sha256,
            bytes,
        });
    }
    Plan {
        host: "web1".into(),
        name: "web1-20261126T055726Z".into(),
        items,
    }
}

#[test]
fn a_directory_copy_is_whole_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("dest");
    let plan = scratch_plan(dir.path());
    for old in [
        "web1-20261101T000000Z",
        "web1-20261102T000000Z",
        "web2-20261101T000000Z",
    ] {
        std::fs::create_dir_all(base.join(old)).unwrap();
        std::fs::write(base.join(old).join("initrd"), "old").unwrap();
    }
    let removed = to_dir(&base, &plan, 2).unwrap();
    assert_eq!(removed, names(&["web1-20261101T000000Z"]));
    let got = base.join(&plan.name);
    for i in &plan.items {
        assert_eq!(
            std::fs::read(got.join(&i.name)).unwrap(),
            std::fs::read(&i.src).unwrap()
        );
    }
    let mut left: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        names(&[
            "web1-20261102T000000Z",
            "web1-20261126T055726Z",
            "web2-20261101T000000Z"
        ])
    );
    // The same image again: refused, nothing changed.
    let e = to_dir(&base, &plan, 2).unwrap_err().to_string();
    assert!(e.contains("was copied before"), "{e}");

    // The image changed under the copy (its bytes no longer the recorded
    // ones): the read-back check fails, no copy folder and no temporary
    // folder stay, the older copies are untouched.
    let mut bad = scratch_plan(dir.path());
    bad.name = "web1-20261127T000000Z".into();
    std::fs::write(&bad.items[1].src, "initrd bytes, changed").unwrap();
    let e = format!("{:#}", to_dir(&base, &bad, 2).unwrap_err());
    assert!(e.contains("initrd read back differs from the image"), "{e}");
    let mut after: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    after.sort();
    assert_eq!(after, left);
}

#[test]
fn a_symlinked_destination_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("dest")).unwrap();
    let plan = scratch_plan(dir.path());
    assert!(to_dir(&dir.path().join("dest"), &plan, 2).is_err());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn a_password_in_the_mount_options_is_warned_about() {
    for opts in ["password=s3cret,port=445", "vers=3.0,pass=s3cret"] {
        let w = password_warning(Some(opts)).unwrap();
        assert!(w.contains("credentials=FILE"), "{w}");
        assert!(
            !w.contains("s3cret"),
            "the warning repeats the password: {w}"
        );
    }
    for opts in [
        None,
        Some("credentials=/root/.smb,port=445"),
        Some("vers=4.1"),
    ] {
        assert_eq!(password_warning(opts), None, "{opts:?}");
    }
}
