//! Loop tier for damage: one flipped byte in a multi-frame archive costs the
//! files in that frame and nothing else; restore, verify and `check` name
//! it; an unreadable generation.json stops nothing else; chains end
//! (`backup.full_every`) so `--keep` prunes, also to make room.
//!
//! Plain temporary folders (and a tmpfs for the full-folder case, as
//! root): `cargo test --test loop_damage -- --test-threads=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::{data, run_lifeboat, Scratch};

fn lifeboat(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String, String) {
    run_lifeboat(args.iter().map(|a| a.as_ref()))
}

fn ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let (code, out, err) = lifeboat(args);
    assert_eq!(code, 0, "lifeboat {:?} failed:\n{out}\n{err}", first(args));
    out
}

fn first(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    args.iter()
        .take(2)
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// Every regular file below `dir`: relative path → content.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            } else if m.is_file() {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `backup create` with `extra` flags; returns the generation's JSON.
fn create(cfg: &Path, src: &Path, bk: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"--config",
        &cfg,
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src,
        &"--json",
    ];
    for e in extra {
        args.push(e);
    }
    json(&ok(&args))
}

/// A configuration file naming the backup folder (and a state folder, for
/// `check`).
fn config(s: &Scratch, bk: &Path, extra: &str) -> PathBuf {
    let path = s.join("lifeboat.toml");
    fs::write(
        &path,
        format!(
            "state_dir = {:?}\n[backup]\ndestination = {:?}\n{extra}\n[rescue]\noutput = {:?}\n",
            s.join("state").display().to_string(),
            bk.display().to_string(),
            s.join("state/rescue").display().to_string()
        ),
    )
    .unwrap();
    path
}

/// (uncompressed start, uncompressed end, file offset, compressed size) of
/// every zstd frame of `archive`.
fn frames(archive: &[u8]) -> Vec<(u64, u64, usize, usize)> {
    let mut out = Vec::new();
    let (mut off, mut at) = (0usize, 0u64);
    while off < archive.len() {
        let n = zstd::zstd_safe::find_frame_compressed_size(&archive[off..]).unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(&archive[off..])
            .unwrap()
            .unwrap();
        out.push((at, at + size, off, n));
        at += size;
        off += n;
    }
    out
}

/// The region of each entry in the uncompressed tar stream (from the end of
/// the previous entry's data, where its PAX header begins, to the end of
/// its own data), from GNU tar's listing (`-R`: the block of each ustar
/// header), in archive order, with the name as lifeboat shows it relative to
/// the tree ("." for the top).
fn entry_regions(archive: &Path) -> Vec<(u64, u64, String)> {
    let out = std::process::Command::new("tar")
        .args(["--zstd", "-tvRf"])
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut regions = Vec::new();
    let mut end = 0u64;
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let Some(rest) = l.strip_prefix("block ") else {
            continue;
        };
        let (n, rest) = rest.split_once(": ").unwrap();
        if rest.starts_with("** ") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        let size: u64 = if f[0].starts_with('-') {
            f[2].parse().unwrap()
        } else {
            0
        };
        let header: u64 = n.parse::<u64>().unwrap() * 512;
        let name = f[5..].join(" ");
        let name = match name.trim_end_matches('/') {
            "." | "" => ".".to_string(),
            n => n.to_string(),
        };
        let data_end = header + 512 + size.div_ceil(512) * 512;
        regions.push((end, data_end, name));
        end = data_end;
    }
    regions
}

/// The entries a reader that resumes at the next frame beginning with an
/// entry loses when frame `k` is damaged: those whose bytes overlap it, and
/// those that begin in the frames after it up to that next frame.
fn expected_loss(
    fr: &[(u64, u64, usize, usize)],
    regions: &[(u64, u64, String)],
    k: usize,
) -> BTreeSet<String> {
    let starts: BTreeSet<u64> = regions.iter().map(|e| e.0).collect();
    let resume = fr[k + 1..]
        .iter()
        .map(|f| f.0)
        .find(|s| starts.contains(s))
        .unwrap_or(u64::MAX);
    regions
        .iter()
        .filter(|(start, end, _)| *end > fr[k].0 && *start < resume)
        .map(|r| r.2.clone())
        .collect()
}

/// A path as on the backed-up system, relative to the tree at `mp`.
fn relative(p: &str, mp: &str) -> String {
    if p == mp {
        return ".".into();
    }
    p.strip_prefix(&format!("{mp}/")).unwrap().to_string()
}

struct Damaged {
    _s: Scratch,
    cfg: PathBuf,
    src: PathBuf,
    bk: PathBuf,
    /// Full, then two incrementals.
    ids: Vec<String>,
    archive: PathBuf,
}

/// A tree of files smaller and larger than a frame, a full backup and two
/// incrementals that keep the big files.
fn damaged_setup(name: &str) -> Damaged {
    let s = Scratch::new(name);
    let src = s.join("src");
    fs::create_dir_all(src.join("small")).unwrap();
    fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..60u64 {
        let len = 2_000 + (i as usize * 37_000) % 400_000;
        fs::write(src.join(format!("small/s{i:02}")), data(i, len)).unwrap();
    }
    for (i, mib) in [(0u64, 3usize), (1, 20), (2, 10), (3, 5), (4, 12)] {
        fs::write(src.join(format!("big/b{i}")), data(100 + i, mib << 20)).unwrap();
    }
    let bk = s.join("backup");
    let cfg = config(&s, &bk, "");
    let mut ids = Vec::new();
    let g = create(&cfg, &src, &bk, &[]);
    ids.push(g["generation"]["id"].as_str().unwrap().to_string());
    let archive = bk
        .join(&ids[0])
        .join(g["generation"]["archives"][0]["file"].as_str().unwrap());
    for i in 0..2u64 {
        fs::write(src.join(format!("small/new{i}")), data(500 + i, 1000)).unwrap();
        let g = create(&cfg, &src, &bk, &["--incremental"]);
        assert_eq!(g["generation"]["kind"], "incremental");
        ids.push(g["generation"]["id"].as_str().unwrap().to_string());
    }
    ok(&[&"--config", &cfg, &"backup", &"verify"]);
    Damaged {
        _s: s,
        cfg,
        src,
        bk,
        ids,
        archive,
    }
}

/// Flips one byte in the middle of frame `k` of the full's archive.
fn flip(d: &Damaged, k: usize) {
    let mut bytes = fs::read(&d.archive).unwrap();
    let fr = frames(&bytes);
    bytes[fr[k].2 + fr[k].3 / 2] ^= 0x20;
    fs::write(&d.archive, bytes).unwrap();
}

/// Restores the newest generation: every file but `lost` byte for byte, the
/// lost ones named exactly, exit 1, in the text and the JSON report. The
/// directory `small` is left out of `lost`: the incrementals stored it
/// again (new files in it), so the newest generation does not need the
/// full's copy.
fn restore_names_exactly(d: &Damaged, lost: &BTreeSet<String>) {
    let mut lost = lost.clone();
    lost.remove("small");
    let lost = &lost;
    let to = d._s.join("restored");
    let _ = fs::remove_dir_all(&to);
    fs::create_dir_all(&to).unwrap();
    let (code, out, err) = lifeboat(&[
        &"--config",
        &d.cfg,
        &"backup",
        &"restore",
        &"--to",
        &to,
        &"--json",
    ]);
    assert_eq!(code, 1, "restore must fail:\n{out}\n{err}");
    let rep = json(&out);
    let mp = d.src.display().to_string();
    let named: BTreeSet<String> = rep["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| relative(l["path"].as_str().unwrap(), &mp))
        .collect();
    assert_eq!(
        &named, lost,
        "restore names exactly the damaged files: {out}"
    );
    for l in lost {
        assert!(
            err.contains(&format!("lost: {mp}/{l}")),
            "{l} not named: {err}"
        );
    }
    let want = tree(&d.src);
    let got = tree(&to.join(mp.trim_start_matches('/')));
    for (p, data) in &want {
        if lost.contains(p) {
            continue;
        }
        assert!(got.get(p) == Some(data), "{p} not restored byte for byte");
    }
    assert!(
        got.keys().all(|k| want.contains_key(k)),
        "extra files restored"
    );
}

/// `verify` names the same files, marks the full and every incremental
/// built on it damaged (and records it in each), and `check` is CRITICAL.
fn verify_marks_the_chain(d: &Damaged, lost: &BTreeSet<String>) {
    let (code, out, err) = lifeboat(&[&"--config", &d.cfg, &"backup", &"verify", &"--json"]);
    assert_eq!(code, 1, "verify must fail:\n{out}\n{err}");
    let rep = json(&out);
    let mp = d.src.display().to_string();
    let named: BTreeSet<String> = rep["damaged_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["generation"], d.ids[0].as_str());
            relative(f["path"].as_str().unwrap(), &mp)
        })
        .collect();
    assert_eq!(&named, lost, "verify names exactly the damaged files");
    let gens: BTreeSet<&str> = rep["damaged_generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    let all: BTreeSet<&str> = d.ids.iter().map(String::as_str).collect();
    assert_eq!(gens, all, "the full and every incremental needing it");
    for id in &d.ids {
        let v = json(&fs::read_to_string(d.bk.join(id).join("verify.json")).unwrap());
        assert_eq!(v["ok"], false, "{id}: {v}");
    }
    let (code, out, _) = lifeboat(&[&"--config", &d.cfg, &"check", &"--nagios"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("LIFEBOAT CRITICAL"), "{out}");
    assert!(
        out.contains(&format!(
            "generation {} of the newest chain is damaged",
            d.ids[0]
        )),
        "{out}"
    );
}

#[test]
fn loop_damage_inside_a_large_file_costs_that_file() {
    let d = damaged_setup("damage-large");
    let bytes = fs::read(&d.archive).unwrap();
    let fr = frames(&bytes);
    assert!(fr.len() >= 8, "a multi-frame archive: {} frames", fr.len());
    let entries = entry_regions(&d.archive);
    // A frame wholly inside big/b1 (20 MiB): only b1 is lost.
    let b1 = entries.iter().find(|e| e.2 == "big/b1").unwrap();
    let k = fr
        .iter()
        .position(|f| f.0 >= b1.0 + 4096 && f.1 <= b1.1)
        .unwrap();
    let lost = expected_loss(&fr, &entries, k);
    assert_eq!(lost, BTreeSet::from(["big/b1".to_string()]));
    flip(&d, k);
    restore_names_exactly(&d, &lost);
    verify_marks_the_chain(&d, &lost);
}

#[test]
fn loop_damage_among_small_files_costs_that_frame() {
    let d = damaged_setup("damage-small");
    let bytes = fs::read(&d.archive).unwrap();
    let fr = frames(&bytes);
    let entries = entry_regions(&d.archive);
    // A frame that begins with an entry and holds several small files.
    let starts: BTreeSet<u64> = entries.iter().map(|e| e.0).collect();
    let k = (1..fr.len() - 1)
        .find(|&k| {
            starts.contains(&fr[k].0)
                && entries
                    .iter()
                    .filter(|e| e.0 >= fr[k].0 && e.1 <= fr[k].1)
                    .count()
                    > 3
        })
        .expect("a frame of small files");
    let lost = expected_loss(&fr, &entries, k);
    assert!(lost.len() > 3 && lost.len() < entries.len() / 2, "{lost:?}");
    flip(&d, k);
    restore_names_exactly(&d, &lost);
    verify_marks_the_chain(&d, &lost);
}

#[test]
fn loop_damage_garbage_generation_json_stops_nothing_else() {
    let s = Scratch::new("damage-json");
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..10u64 {
        fs::write(src.join(format!("f{i}")), data(i, 50_000)).unwrap();
    }
    let bk = s.join("backup");
    let cfg = config(&s, &bk, "");
    let id = |g: serde_json::Value| g["generation"]["id"].as_str().unwrap().to_string();
    let a = id(create(&cfg, &src, &bk, &[]));
    let b = id(create(&cfg, &src, &bk, &["--incremental"]));
    let c = id(create(&cfg, &src, &bk, &[]));
    fs::write(src.join("f0"), b"changed").unwrap();
    let d = id(create(&cfg, &src, &bk, &["--incremental"]));
    fs::write(
        bk.join(&b).join("generation.json"),
        b"{ \"format\": 1, garbage",
    )
    .unwrap();

    // list: the others, and b as damaged (exit 1).
    let (code, out, err) = lifeboat(&[&"--config", &cfg, &"backup", &"list"]);
    assert_eq!(code, 1, "{out}{err}");
    for g in [&a, &c, &d] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(g.as_str()) && !l.contains("DAMAGED")),
            "{g}: {out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with(b.as_str()) && l.contains("DAMAGED")),
        "{out}"
    );
    assert!(err.contains(&format!("generation {b} is damaged")), "{err}");

    // verify: b damaged, the others sound and recorded so.
    let (code, out, _) = lifeboat(&[&"--config", &cfg, &"backup", &"verify", &"--json"]);
    assert_eq!(code, 1, "{out}");
    let rep = json(&out);
    let gens: Vec<&str> = rep["damaged_generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(gens, [b.as_str()]);
    for g in [&a, &c, &d] {
        let v = json(&fs::read_to_string(bk.join(g).join("verify.json")).unwrap());
        assert_eq!(v["ok"], true, "{g}");
    }
    let v = json(&fs::read_to_string(bk.join(&b).join("verify.json")).unwrap());
    assert_eq!(v["ok"], false);

    // An incremental builds on d; --keep 1 removes the old chain with b.
    fs::write(src.join("f1"), b"changed too").unwrap();
    let e = create(&cfg, &src, &bk, &["--incremental", "--keep", "1"]);
    assert_eq!(e["generation"]["kind"], "incremental");
    assert_eq!(e["generation"]["parent"], d.as_str());
    let mut removed: Vec<String> = e["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    removed.sort();
    assert_eq!(removed, [a.clone(), b.clone()]);
    let mut left: Vec<String> = fs::read_dir(&bk)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    left.sort();
    let e_id = id(e);
    assert_eq!(left, [c.clone(), d.clone(), e_id.clone()]);
    ok(&[&"--config", &cfg, &"backup", &"verify"]);
    let to = s.join("restored");
    fs::create_dir_all(&to).unwrap();
    ok(&[&"--config", &cfg, &"backup", &"restore", &"--to", &to]);
    assert_eq!(tree(&to.join(src.strip_prefix("/").unwrap())), tree(&src));
}

#[test]
fn loop_full_every_ends_chains_so_keep_prunes() {
    let s = Scratch::new("full-every");
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    let bk = s.join("backup");
    let cfg = config(&s, &bk, "");
    let mut kinds = Vec::new();
    let mut ids = Vec::new();
    for i in 0..9u64 {
        fs::write(src.join(format!("f{i}")), data(i, 10_000)).unwrap();
        let keep: &[&str] = if i == 8 {
            &["--incremental", "--keep", "1"]
        } else {
            &["--incremental"]
        };
        let g = create(&cfg, &src, &bk, keep);
        kinds.push(g["generation"]["kind"].as_str().unwrap().to_string());
        ids.push(g["generation"]["id"].as_str().unwrap().to_string());
        if i == 7 {
            let note = g["note"].as_str().unwrap_or_default();
            assert!(note.contains("backup.full_every = 7"), "{note}");
        }
        if i == 8 {
            let removed: Vec<&str> = g["removed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let mut want: Vec<&str> = ids[..7].iter().map(String::as_str).collect();
            want.reverse();
            assert_eq!(removed, want, "the whole first chain, newest first");
        }
    }
    // The 8th backup is a full with the default full_every = 7.
    let mut want = vec!["full"];
    want.extend(["incremental"; 6]);
    want.extend(["full", "incremental"]);
    assert_eq!(kinds, want);
    let out = ok(&[&"--config", &cfg, &"backup", &"list", &"--json"]);
    let listed: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids[7..]);

    // full_every = 3 in the configuration, and 0 (never by count).
    let bk3 = s.join("backup3");
    let cfg3 = config(&s, &bk3, "full_every = 3");
    let kinds: Vec<String> = (0..5)
        .map(|_| {
            create(&cfg3, &src, &bk3, &["--incremental"])["generation"]["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        ["full", "incremental", "incremental", "full", "incremental"]
    );
    let bk0 = s.join("backup0");
    let cfg0 = config(&s, &bk0, "full_every = 0");
    let kinds: Vec<String> = (0..9)
        .map(|_| {
            create(&cfg0, &src, &bk0, &["--incremental"])["generation"]["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "full").count(), 1);
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn loop_keep_makes_room_when_the_folder_is_full() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let s = Scratch::new("full-folder");
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    // Incompressible: each full is about 2.5 MiB.
    let mut x = 0x9e3779b97f4a7c15u64;
    let noise: Vec<u8> = (0..(5 << 19))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(src.join("noise"), &noise).unwrap();
    let bk = s.join("backup");
    fs::create_dir_all(&bk).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&bk)
        .status()
        .unwrap();
    assert!(st.success());
    let _mount = Tmpfs(bk.clone());
    let cfg = config(&s, &bk, "");
    let first = create(&cfg, &src, &bk, &[]);
    let second = create(&cfg, &src, &bk, &[]);
    // No room for a third: --keep 1 removes the first and tries again.
    let third = create(&cfg, &src, &bk, &["--keep", "1"]);
    let retried = third["retried"].as_str().unwrap_or_default();
    assert!(
        retried.contains("is full") && retried.contains("tried once more"),
        "{third}"
    );
    let removed: BTreeSet<&str> = third["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let id = |g: &serde_json::Value| g["generation"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        removed,
        BTreeSet::from([id(&first).as_str(), id(&second).as_str()])
    );
    ok(&[&"--config", &cfg, &"backup", &"verify"]);
    // Without --keep the same failure is an error that leaves the rest.
    let (code, _, err) = lifeboat(&[
        &"--config",
        &cfg,
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src,
    ]);
    let (code2, _, err2) = lifeboat(&[
        &"--config",
        &cfg,
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(code2, 2, "{err2}");
    assert!(err2.contains("is full"), "{err2}");
    ok(&[&"--config", &cfg, &"backup", &"verify"]);
}
