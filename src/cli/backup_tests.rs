//! `backup` flags go through the config layer: flag > environment > file >
//! default, each value with the source that set it.

use std::collections::HashMap;

use clap::Parser;

use super::*;
use crate::config::{LoadOptions, Source};

#[derive(Parser)]
struct Create {
    #[command(flatten)]
    a: CreateArgs,
}

/// A configuration from `file` and `env`, as `lifeboat` loads it.
fn load(file: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(&path, file).unwrap();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let opts = LoadOptions {
        path: Some(path),
        state_dir: None,
    };
    let cfg = Config::load_with(&opts, &|k| env.get(k).cloned()).unwrap();
    (dir, cfg)
}

fn create(args: &[&str]) -> CreateArgs {
    let argv = std::iter::once("create").chain(args.iter().copied());
    Create::try_parse_from(argv).unwrap().a
}

fn flag(name: &str) -> Source {
    Source::Flag { flag: name.into() }
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let file = "[backup]\ndestination = \"/file\"\nlevel = 5\nthreads = 3\nkeep_daily = 7\n";
    let env = [
        ("LIFEBOAT_BACKUP_DESTINATION", "/env"),
        ("LIFEBOAT_BACKUP_LEVEL", "9"),
    ];
    let (_d, cfg) = load(file, &env);
    let b = &create(&["--to", "/flag"]).over(&cfg).backup;
    // flag over environment over file
    assert_eq!(b.destination.value.as_deref(), Some("/flag"));
    assert_eq!(b.destination.source, flag("--to"));
    // environment over file
    assert_eq!(b.level.value.map(|l| l.0), Some(9));
    assert!(matches!(&b.level.source, Source::Env { var } if var == "LIFEBOAT_BACKUP_LEVEL"));
    // file over default
    assert_eq!(b.threads.value.map(|t| t.0), Some(3));
    assert!(matches!(b.threads.source, Source::File { line: 4, .. }));
    assert_eq!(b.retention().daily, 7);
    // default
    assert_eq!(b.compression.value.0, Compression::Zstd);
    assert_eq!(b.compression.source, Source::Default);

    let b = &create(&[
        "--to",
        "/f",
        "--level",
        "1",
        "--threads",
        "2",
        "--keep-daily",
        "1",
    ])
    .over(&cfg)
    .backup;
    assert_eq!(b.level.value.map(|l| l.0), Some(1));
    assert_eq!(b.level.source, flag("--level"));
    assert_eq!(b.threads.value.map(|t| t.0), Some(2));
    assert_eq!(b.retention().daily, 1);
    assert_eq!(b.keep_daily.source, flag("--keep-daily"));
}

#[test]
fn lists_are_replaced_by_a_flag_not_merged() {
    let (_d, cfg) = load("[backup]\nexcludes = [\"/a\", \"/b\"]\n", &[]);
    let b = &create(&[]).over(&cfg).backup;
    assert_eq!(b.excludes.value, ["/a", "/b"]);
    let b = &create(&["--exclude", "/c"]).over(&cfg).backup;
    assert_eq!(b.excludes.value, ["/c"]);
    assert_eq!(b.excludes.source, flag("--exclude"));
}

#[test]
fn full_and_differential_turn_configured_incremental_off() {
    let (_d, cfg) = load("", &[("LIFEBOAT_BACKUP_INCREMENTAL", "yes")]);
    assert!(create(&[]).over(&cfg).backup.incremental.value);
    for f in ["--full", "--differential"] {
        let b = &create(&[f]).over(&cfg).backup;
        assert!(!b.incremental.value, "{f}");
        assert_eq!(b.incremental.source, flag(f));
    }
    let (_d, cfg) = load("", &[]);
    assert!(
        create(&["--incremental"])
            .over(&cfg)
            .backup
            .incremental
            .value
    );
}

#[test]
fn folder_flags_of_the_reading_commands() {
    let (_d, cfg) = load("[backup]\nmount_options = \"vers=4\"\n", &[]);
    let c = over_folder(&cfg, Some("/x".into()), "--from", None);
    assert_eq!(c.backup.destination.source, flag("--from"));
    assert_eq!(c.backup.mount_options.value.as_deref(), Some("vers=4"));
    let err = destination(&cfg, "--from").unwrap_err().to_string();
    assert!(err.contains("give --from DEST"), "{err}");
}
