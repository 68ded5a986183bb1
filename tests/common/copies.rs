//! Checks of rescue image copies (`rescue.destination`) as they lie in the
//! destination folder, for the loop and QEMU tiers.

use std::path::Path;

/// The entries of `dir` (folders and files), sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The copy folder `copy` holds exactly the image of `output` as built
/// (every file of rescue.json, rescue.json itself) and the layout built
/// in, byte for byte.
pub fn assert_copy_of(copy: &Path, output: &Path) {
    let rec = lifeboat::rescue::BuildRecord::load(output).unwrap();
    let mut want: Vec<String> = rec.files.iter().map(|f| f.name.clone()).collect();
    want.push("rescue.json".into());
    for f in &rec.files {
        assert_eq!(
            lifeboat::rescue::sha256_file(&copy.join(&f.name)).unwrap(),
            f.sha256,
            "{} in {}",
            f.name,
            copy.display()
        );
    }
    assert_eq!(
        std::fs::read(copy.join("rescue.json")).unwrap(),
        std::fs::read(output.join("rescue.json")).unwrap()
    );
    if let Some(l) = &rec.layout {
        want.push("layout.json".into());
        assert_eq!(
            std::fs::read(copy.join("layout.json")).unwrap(),
            std::fs::read(l).unwrap()
        );
    }
    want.sort();
    assert_eq!(entries(copy), want, "{}", copy.display());
}
