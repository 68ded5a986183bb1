//! Size fitting: fixed items keep their size, the others grow or shrink in
//! proportion to the space there is, never below what their data needs,
//! aligned to 1 MiB (extents for LVs). When the minimums do not fit, the
//! error says by how many bytes the target is short.

use serde::{Deserialize, Serialize};

pub const MIB: u64 = 1 << 20;

pub fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

pub fn align_down(v: u64, a: u64) -> u64 {
    v / a * a
}

/// One item to size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub old: u64,
    pub fixed: bool,
    /// The least size that holds its data.
    pub min: u64,
}

/// Not enough space: `short` bytes missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("short by {short} bytes: needs at least {needed} bytes, has {available}")]
pub struct Short {
    pub short: u64,
    pub needed: u64,
    pub available: u64,
}

/// Sizes `items` to share `capacity` bytes: fixed items keep their size,
/// the others scale by one factor (re-computed while some are held at their
/// minimum), each aligned down to `align`.
pub fn scale(items: &[Item], capacity: u64, align: u64) -> Result<Vec<u64>, Short> {
    let fixed: u64 = items.iter().filter(|i| i.fixed).map(|i| i.old).sum();
    let mins: u64 = items
        .iter()
        .filter(|i| !i.fixed)
        .map(|i| align_up(i.min, align))
        .sum();
    if fixed + mins > capacity {
        return Err(Short {
            short: fixed + mins - capacity,
            needed: fixed + mins,
            available: capacity,
        });
    }
    let mut held: Vec<bool> = items.iter().map(|i| i.fixed).collect();
    let mut sizes: Vec<u64> = items.iter().map(|i| i.old).collect();
    loop {
        let held_total: u64 = items
            .iter()
            .zip(&held)
            .zip(&sizes)
            .filter(|((_, h), _)| **h)
            .map(|(_, s)| *s)
            .sum();
        let free_old: u64 = items
            .iter()
            .zip(&held)
            .filter(|(_, h)| !**h)
            .map(|(i, _)| i.old)
            .sum();
        if free_old == 0 {
            break;
        }
        let room = capacity.saturating_sub(held_total);
        let mut changed = false;
        for (idx, item) in items.iter().enumerate() {
            if held[idx] {
                continue;
            }
            let s = align_down(
                (item.old as u128 * room as u128 / free_old as u128) as u64,
                align,
            );
            if s < item.min {
                sizes[idx] = align_up(item.min, align);
                held[idx] = true;
                changed = true;
            } else {
                sizes[idx] = s;
            }
        }
        if !changed {
            break;
        }
    }
    Ok(sizes)
}

/// A partition (or free space) on the old disk, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start: u64,
    pub size: u64,
    pub fixed: bool,
    pub min: u64,
}

/// The usable byte range of a disk's partition table: [start, end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usable {
    pub start: u64,
    pub end: u64,
}

/// Places `old` spans (sorted by start) on a disk with usable range `new`.
/// Returns (start, size) in bytes for each span. When the usable range is
/// unchanged, so is every span. Otherwise the gaps between partitions are
/// kept, spans that started on a 1 MiB boundary still do, free space at the
/// end of the old disk scales with the rest, and a partition that reached the
/// end of the old disk reaches the end of the new one.
pub fn place(old: &[Span], old_usable: Usable, new: Usable) -> Result<Vec<(u64, u64)>, Short> {
    place_inner(old, old_usable, new, None)
}

/// [`place`] onto a disk whose logical sectors are `new_sector` bytes, larger
/// or smaller than the old disk's: every partition starts on a 1 MiB boundary
/// (whatever its old start), and every size is a whole number of new sectors
/// (a fixed size is rounded up to one).
pub fn place_on_sectors(
    old: &[Span],
    old_usable: Usable,
    new: Usable,
    new_sector: u64,
) -> Result<Vec<(u64, u64)>, Short> {
    place_inner(old, old_usable, new, Some(new_sector))
}

fn place_inner(
    old: &[Span],
    old_usable: Usable,
    new: Usable,
    realign: Option<u64>,
) -> Result<Vec<(u64, u64)>, Short> {
    if realign.is_none() && old_usable == new || old.is_empty() {
        return Ok(old.iter().map(|s| (s.start, s.size)).collect());
    }
    let last_end = old
        .iter()
        .map(|s| s.start + s.size)
        .max()
        .unwrap_or(old_usable.start);
    let trailing = old_usable.end.saturating_sub(last_end);
    let to_end = trailing <= 2 * MIB;
    let lead = match realign {
        // The first partition keeps its byte offset, on a 1 MiB boundary.
        Some(_) => align_up(old[0].start.max(new.start), MIB) - new.start,
        None => old[0].start.saturating_sub(old_usable.start),
    };
    let gaps: Vec<u64> = old
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == 0 {
                0
            } else {
                s.start.saturating_sub(old[i - 1].start + old[i - 1].size)
            }
        })
        .collect();
    // Room for rounding each start up to 1 MiB.
    let slack = MIB * (old.len() as u64 + 1);
    let overhead = lead + gaps.iter().sum::<u64>() + slack;
    let mut items: Vec<Item> = old
        .iter()
        .map(|s| Item {
            old: match realign {
                Some(sector) if s.fixed => align_up(s.size, sector),
                _ => s.size,
            },
            fixed: s.fixed,
            min: s.min,
        })
        .collect();
    if !to_end {
        // Free space at the end scales like a partition.
        items.push(Item {
            old: trailing,
            fixed: false,
            min: 0,
        });
    }
    let capacity = (new.end - new.start).saturating_sub(overhead);
    let sizes = scale(&items, capacity, MIB).map_err(|s| Short {
        short: s.short,
        needed: s.needed + overhead,
        available: new.end - new.start,
    })?;

    let mut out = Vec::with_capacity(old.len());
    let mut pos = new.start + lead;
    for (i, span) in old.iter().enumerate() {
        pos += gaps[i];
        let start = if realign.is_some() || span.start % MIB == 0 || pos % MIB != 0 && i > 0 {
            align_up(pos, MIB)
        } else {
            pos
        };
        let start = start.max(new.start);
        out.push((start, sizes[i]));
        pos = start + sizes[i];
    }
    if to_end {
        // Give what rounding left over to the last resizable span, moving the
        // spans after it.
        let end = align_down(new.end, MIB).max(pos.min(new.end));
        let end = if end > new.end { new.end } else { end };
        if end > pos {
            if let Some(last) = old.iter().rposition(|s| !s.fixed) {
                let extra = end - pos;
                out[last].1 += extra;
                for o in out.iter_mut().skip(last + 1) {
                    o.0 += extra;
                }
            }
        }
    }
    if let Some(&(s, z)) = out.last() {
        if s + z > new.end {
            return Err(Short {
                short: s + z - new.end,
                needed: s + z - new.start,
                available: new.end - new.start,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn item(old: u64, fixed: bool, min: u64) -> Item {
        Item { old, fixed, min }
    }

    #[test]
    fn scale_table() {
        // (items, capacity, expected)
        type Case = (Vec<Item>, u64, Result<Vec<u64>, u64>);
        let cases: Vec<Case> = vec![
            // same capacity: same sizes
            (
                vec![item(10 * GIB, false, 0), item(5 * GIB, false, 0)],
                15 * GIB,
                Ok(vec![10 * GIB, 5 * GIB]),
            ),
            // twice the space: twice the size, fixed stays
            (
                vec![item(GIB, true, 0), item(4 * GIB, false, 0)],
                9 * GIB,
                Ok(vec![GIB, 8 * GIB]),
            ),
            // shrink with one item held at its minimum
            (
                vec![item(10 * GIB, false, 8 * GIB), item(10 * GIB, false, 0)],
                12 * GIB,
                Ok(vec![8 * GIB, 4 * GIB]),
            ),
            // too small: short by 1 GiB
            (
                vec![item(GIB, true, 0), item(10 * GIB, false, 6 * GIB)],
                6 * GIB,
                Err(GIB),
            ),
        ];
        for (items, cap, expect) in cases {
            let got = scale(&items, cap, MIB).map_err(|s| s.short);
            assert_eq!(got, expect, "{items:?} into {cap}");
        }
    }

    fn span(start_mib: u64, size_mib: u64, fixed: bool) -> Span {
        Span {
            start: start_mib * MIB,
            size: size_mib * MIB,
            fixed,
            min: 0,
        }
    }

    fn usable(end_mib: u64) -> Usable {
        // GPT on 512-byte sectors: LBA 34 to N-34.
        Usable {
            start: 34 * 512,
            end: end_mib * MIB - 33 * 512,
        }
    }

    #[test]
    fn same_disk_keeps_every_byte() {
        let old = vec![span(1, 1, true), span(2, 200, true), span(202, 9000, false)];
        let got = place(&old, usable(10240), usable(10240)).unwrap();
        assert_eq!(
            got,
            vec![(MIB, MIB), (2 * MIB, 200 * MIB), (202 * MIB, 9000 * MIB)]
        );
    }

    #[test]
    fn larger_disk_grows_resizable_partitions_and_reaches_the_end() {
        // bios boot, ESP, /boot fixed; LVM PV to the end of a 10 GiB disk.
        let old = vec![
            span(1, 1, true),
            span(2, 200, true),
            span(202, 500, true),
            span(702, 9537, false),
        ];
        let got = place(&old, usable(10240), usable(20480)).unwrap();
        assert_eq!(
            &got[..3],
            &[(MIB, MIB), (2 * MIB, 200 * MIB), (202 * MIB, 500 * MIB)]
        );
        let (start, size) = got[3];
        assert_eq!(start, 702 * MIB);
        assert_eq!(
            start + size,
            20479 * MIB,
            "last partition reaches the last whole MiB"
        );
    }

    #[test]
    fn smaller_disk_shrinks_in_proportion_and_keeps_free_space_share() {
        // two data partitions, 50% of the disk free at the end
        let old = vec![span(1, 2048, false), span(2049, 2048, false)];
        let got = place(&old, usable(8192), usable(4096)).unwrap();
        for (s, z) in &got {
            assert_eq!(s % MIB, 0);
            assert!(*z >= 1000 * MIB && *z <= 1024 * MIB, "{z}");
        }
        assert!(got[1].0 >= got[0].0 + got[0].1);
    }

    #[test]
    fn too_small_disk_says_by_how_much() {
        let mut old = vec![span(1, 512, true), span(513, 8000, false)];
        old[1].min = 6000 * MIB;
        let err = place(&old, usable(8600), usable(4096)).unwrap_err();
        assert!(err.short > 2400 * MIB && err.short < 2500 * MIB, "{err}");
        assert!(err.to_string().starts_with("short by "));
    }

    #[test]
    fn unaligned_old_start_is_kept_when_not_resizing_before_it() {
        // MBR disk whose first partition starts at sector 63.
        let old = vec![Span {
            start: 63 * 512,
            size: 1000 * MIB,
            fixed: false,
            min: 0,
        }];
        let u_old = Usable {
            start: 512,
            end: 1024 * MIB,
        };
        let u_new = Usable {
            start: 512,
            end: 2048 * MIB,
        };
        let got = place(&old, u_old, u_new).unwrap();
        assert_eq!(got[0].0, 63 * 512);
        assert!(got[0].0 + got[0].1 <= 2048 * MIB);
    }
}
