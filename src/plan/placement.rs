//! Where each LV goes on its new PVs. A VG spread over a fast and a slow
//! disk keeps its layout: when an LV keeps its size and its old extents
//! exist on the new PVs, it is created on exactly those extents, segment by
//! segment in their order; when its size changes, on the same PVs (LVM
//! picks the extents); when even that does not fit, where LVM finds room,
//! and the plan says so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::layout::{LogicalVolume, PhysicalVolume, SegType};

use super::fit::align_down;

/// A run of physical extents on one PV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvRange {
    pub pv: String,
    pub first: u64,
    pub count: u64,
}

impl PvRange {
    /// The `PV:FIRST-LAST` argument of lvcreate and lvextend.
    pub fn arg(&self) -> String {
        format!("{}:{}-{}", self.pv, self.first, self.first + self.count - 1)
    }
}

/// Where lvcreate puts an LV.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Where LVM finds room (raid, thin and pool LVs, or what does not fit).
    #[default]
    Free,
    /// On these PVs, in this order; LVM picks the extents.
    Pvs(Vec<String>),
    /// On exactly these extents, in logical order.
    Extents(Vec<PvRange>),
}

impl Placement {
    pub fn is_free(&self) -> bool {
        *self == Placement::Free
    }

    /// In words, for the plan.
    pub fn describe(&self) -> String {
        match self {
            Placement::Free => "where LVM finds room".into(),
            Placement::Pvs(pvs) => format!("on {} (extents as LVM allocates)", pvs.join(", ")),
            Placement::Extents(r) => {
                format!(
                    "on {}",
                    r.iter().map(PvRange::arg).collect::<Vec<_>>().join(", ")
                )
            }
        }
    }
}

/// One old PV on the new disks: its new path and extent count.
pub struct NewPv {
    pub old: String,
    pub new: String,
    pub extents: u64,
}

impl NewPv {
    /// `old` and `new` PVs in the same order (the plan's rename of each).
    pub fn pair(old: &[&PhysicalVolume], new: &[PhysicalVolume], extent: u64) -> Vec<NewPv> {
        old.iter()
            .zip(new)
            .map(|(o, n)| NewPv {
                old: o.device.clone(),
                new: n.device.clone(),
                extents: align_down(n.dev_size_bytes.saturating_sub(n.pe_start_bytes), extent)
                    / extent,
            })
            .collect()
    }
}

/// `/dev/vda3(120)` → (`/dev/vda3`, 120).
fn parse_area(text: &str) -> Option<(&str, u64)> {
    let (dev, rest) = text.split_once('(')?;
    Some((dev, rest.strip_suffix(')')?.parse().ok()?))
}

/// The old extents of an LV made only of linear segments, in logical order.
fn old_ranges(lv: &LogicalVolume, extent: u64) -> Option<Vec<PvRange>> {
    let mut segs: Vec<_> = lv.segments.iter().collect();
    segs.sort_by_key(|s| s.start_bytes);
    segs.iter()
        .map(|s| {
            if s.segtype != SegType::Linear || s.devices.len() != 1 || s.size_bytes % extent != 0 {
                return None;
            }
            let (pv, first) = parse_area(&s.devices[0])?;
            Some(PvRange {
                pv: pv.to_string(),
                first,
                count: s.size_bytes / extent,
            })
        })
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty())
}

/// The PVs an LV's linear or striped segments use, in logical order of
/// first use.
fn old_pvs(lv: &LogicalVolume) -> Option<Vec<String>> {
    let mut segs: Vec<_> = lv.segments.iter().collect();
    segs.sort_by_key(|s| s.start_bytes);
    let mut out: Vec<String> = Vec::new();
    for s in segs {
        if !matches!(s.segtype, SegType::Linear | SegType::Striped) {
            return None;
        }
        for d in &s.devices {
            let (pv, _) = parse_area(d)?;
            if !out.iter().any(|p| p == pv) {
                out.push(pv.to_string());
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The placement of each LV (`(lv, new size)` in creation order), and a
/// note for each that cannot stay where it was.
pub fn place(
    lvs: &[(&LogicalVolume, u64)],
    pvs: &[NewPv],
    extent: u64,
) -> (Vec<Placement>, Vec<String>) {
    let by_old: BTreeMap<&str, &NewPv> = pvs.iter().map(|p| (p.old.as_str(), p)).collect();
    let mut free: BTreeMap<&str, u64> = pvs.iter().map(|p| (p.new.as_str(), p.extents)).collect();
    let mut taken: Vec<PvRange> = Vec::new();
    let mut out = vec![Placement::Free; lvs.len()];
    let mut notes = Vec::new();
    // Exact extents first: they are reserved before anything else is
    // allocated (recover creates these LVs first).
    for (i, (lv, size)) in lvs.iter().enumerate() {
        let Some(ranges) = old_ranges(lv, extent).filter(|_| *size == lv.size_bytes) else {
            continue;
        };
        let new: Option<Vec<PvRange>> = ranges
            .iter()
            .map(|r| {
                let p = by_old.get(r.pv.as_str())?;
                (r.first + r.count <= p.extents).then(|| PvRange {
                    pv: p.new.clone(),
                    ..r.clone()
                })
            })
            .collect();
        let overlaps = |r: &PvRange| {
            taken
                .iter()
                .any(|t| t.pv == r.pv && r.first < t.first + t.count && t.first < r.first + r.count)
        };
        if let Some(new) = new.filter(|n| !n.iter().any(overlaps)) {
            taken.extend(new.iter().cloned());
            for r in &new {
                *free.get_mut(r.pv.as_str()).expect("a new PV") -= r.count;
            }
            out[i] = Placement::Extents(new);
        }
    }
    for (i, (lv, size)) in lvs.iter().enumerate() {
        if !out[i].is_free() {
            continue;
        }
        let Some(old) = old_pvs(lv) else { continue };
        let name = format!("{}/{}", lv.vg, lv.name);
        let new: Option<Vec<&str>> = old
            .iter()
            .map(|p| by_old.get(p.as_str()).map(|n| n.new.as_str()))
            .collect();
        let Some(new) = new else {
            notes.push(format!("logical volume {name}: a PV it was on is not recreated; placed where LVM finds room"));
            continue;
        };
        let mut need = size.div_ceil(extent);
        let room: u64 = new.iter().map(|p| free[p]).sum();
        if room < need {
            notes.push(format!(
                "logical volume {name} no longer fits on {} (its PVs before): placed where LVM finds room",
                new.join(", ")
            ));
            continue;
        }
        for p in &new {
            let take = need.min(free[p]);
            *free.get_mut(p).expect("a new PV") -= take;
            need -= take;
        }
        out[i] = Placement::Pvs(new.iter().map(|p| p.to_string()).collect());
    }
    (out, notes)
}
