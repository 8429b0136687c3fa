//! A series of dumps of one process: their order, and where each lies on the way through the
//! run (the x axis of growth charts and of `tally leaks`).
//!
//! Dump files are named `<prefix>.<pid>.<seq>.<kind>.heap`, `<kind>` being `i<n>` (interval),
//! `m<n>` (manual), `u<n>` (new peak) or `f` (final), as jemalloc and Tally write them. A shell
//! lists `….i10.heap` before `….i2.heap`, so the series is put in the order of `<seq>` when every
//! name parses, and left in the order given otherwise.
//!
//! The position of a dump, best first:
//! 1. **Bytes allocated so far**, read from the dump itself when it carries cumulative counts
//!    (`prof_accum:true`): the un-biased cumulative bytes of its `t*:` line.
//! 2. **Bytes allocated so far**, from the interval number: an interval dump `i<n>` is written
//!    when allocation crosses `(n + 1)·2^lg_prof_interval` bytes, so with the interval given
//!    (`--lg-interval`), dump `i<n>` lies at `(n + 1)·2^lg_prof_interval`.
//! 3. **The interval number** `n + 1` when every dump is an interval dump but the interval is
//!    not known, else the position in the series (1, 2, …): growth is then per dump.

use std::path::{Path, PathBuf};

use crate::dump::Dump;

/// What a dump's file name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpName {
    /// The process.
    pub pid: u64,
    /// The dump's number among all the dumps of the process.
    pub seq: u64,
    /// Which kind of dump.
    pub kind: DumpKind,
}

/// Why a dump was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    /// Every `2^lg_prof_interval` bytes allocated: the interval's number.
    Interval(u64),
    /// On request.
    Manual(u64),
    /// On a new peak of mapped memory.
    Peak(u64),
    /// At exit.
    Final,
}

/// Parses `<prefix>.<pid>.<seq>.<kind>.heap` (the prefix may contain dots).
pub fn parse_name(path: &Path) -> Option<DumpName> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_suffix(".heap")?;
    let mut parts = rest.rsplitn(4, '.');
    let kind = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    let number = |prefix: char| kind.strip_prefix(prefix)?.parse::<u64>().ok();
    let kind = if kind == "f" {
        DumpKind::Final
    } else if let Some(n) = number('i') {
        DumpKind::Interval(n)
    } else if let Some(n) = number('m') {
        DumpKind::Manual(n)
    } else if let Some(n) = number('u') {
        DumpKind::Peak(n)
    } else {
        return None;
    };
    Some(DumpName { pid, seq, kind })
}

/// `paths` in the order of their sequence numbers, when all their names parse; as given
/// otherwise. A warning when the names show more than one process.
pub fn order(mut paths: Vec<PathBuf>) -> (Vec<PathBuf>, Option<String>) {
    let names: Option<Vec<DumpName>> = paths.iter().map(|p| parse_name(p)).collect();
    let Some(names) = names else {
        return (paths, None);
    };
    let mut keyed: Vec<(u64, u64, PathBuf)> = names
        .iter()
        .zip(paths.drain(..))
        .map(|(name, path)| (name.pid, name.seq, path))
        .collect();
    keyed.sort_by_key(|(pid, seq, _)| (*pid, *seq));
    let first_pid = keyed.first().map(|k| k.0);
    let warning = keyed.iter().any(|k| Some(k.0) != first_pid).then(|| {
        "the dumps come from more than one process (pid in their names); treating them as one series"
            .to_string()
    });
    (keyed.into_iter().map(|(_, _, path)| path).collect(), warning)
}

/// What the x axis of a series measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AxisUnit {
    /// Bytes allocated since the process started.
    AllocatedBytes,
    /// Interval numbers or positions in the series: no byte count is known.
    Dumps,
}

/// Where each dump of a series lies.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// One value per dump, ascending.
    pub values: Vec<f64>,
    /// What they measure.
    pub unit: AxisUnit,
}

impl Axis {
    /// The axis of `dumps`, named `paths` (which may be empty), as the module docs say.
    pub fn of(dumps: &[Dump], paths: &[PathBuf], lg_interval: Option<u32>) -> Axis {
        let allocated: Vec<f64> = dumps
            .iter()
            .map(|dump| dump.totals.accum.jeprof_estimate(dump.period).bytes)
            .collect();
        if !dumps.is_empty() && allocated.iter().all(|&bytes| bytes > 0.0) && ascending(&allocated) {
            return Axis {
                values: allocated,
                unit: AxisUnit::AllocatedBytes,
            };
        }
        let intervals: Option<Vec<f64>> = (paths.len() == dumps.len())
            .then(|| {
                paths
                    .iter()
                    .map(|path| match parse_name(path)?.kind {
                        DumpKind::Interval(n) => Some((n + 1) as f64),
                        _ => None,
                    })
                    .collect()
            })
            .flatten();
        match (intervals, lg_interval) {
            (Some(intervals), Some(lg)) if ascending(&intervals) => Axis {
                values: intervals
                    .iter()
                    .map(|n| n * 2f64.powi(lg.min(62) as i32))
                    .collect(),
                unit: AxisUnit::AllocatedBytes,
            },
            (Some(intervals), None) if ascending(&intervals) => Axis {
                values: intervals,
                unit: AxisUnit::Dumps,
            },
            _ => Axis {
                values: (1..=dumps.len()).map(|i| i as f64).collect(),
                unit: AxisUnit::Dumps,
            },
        }
    }

    /// How a value of this axis prints.
    pub fn format(&self, value: f64) -> String {
        match self.unit {
            AxisUnit::AllocatedBytes => format_bytes(value),
            AxisUnit::Dumps => format!("{value:.0}"),
        }
    }

    /// The axis's label.
    pub fn label(&self) -> &'static str {
        match self.unit {
            AxisUnit::AllocatedBytes => "bytes allocated",
            AxisUnit::Dumps => "dump",
        }
    }
}

fn ascending(values: &[f64]) -> bool {
    values.windows(2).all(|w| w[0] < w[1])
}

/// Bytes in the largest binary unit that keeps the number at or above 1: `1.5 GiB`.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dump_names() {
        assert_eq!(
            parse_name(Path::new("/tmp/x.y/jeprof.out.123.7.i6.heap")),
            Some(DumpName {
                pid: 123,
                seq: 7,
                kind: DumpKind::Interval(6)
            })
        );
        assert_eq!(
            parse_name(Path::new("tally.9.0.f.heap")).map(|n| n.kind),
            Some(DumpKind::Final)
        );
        assert_eq!(parse_name(Path::new("9.0.f.heap")), None);
        assert_eq!(parse_name(Path::new("a.9.0.q.heap")), None);
        assert_eq!(parse_name(Path::new("a.heap")), None);
    }

    #[test]
    fn orders_by_sequence_number() {
        let paths: Vec<PathBuf> = ["j.5.10.i10.heap", "j.5.2.i2.heap", "j.5.1.i1.heap"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let (ordered, warning) = order(paths);
        assert_eq!(
            ordered,
            ["j.5.1.i1.heap", "j.5.2.i2.heap", "j.5.10.i10.heap"].map(PathBuf::from)
        );
        assert_eq!(warning, None);
        let (given, _) = order(vec!["b.heap".into(), "a.heap".into()]);
        assert_eq!(given, [PathBuf::from("b.heap"), PathBuf::from("a.heap")]);
        assert!(order(vec!["j.5.1.i1.heap".into(), "j.6.2.i2.heap".into()])
            .1
            .is_some());
    }

    #[test]
    fn axis_from_interval_numbers() {
        let dumps = vec![Dump::default(), Dump::default()];
        let paths = ["j.5.0.i0.heap", "j.5.3.i3.heap"].map(PathBuf::from);
        let axis = Axis::of(&dumps, &paths, Some(20));
        assert_eq!(axis.values, [1048576.0, 4.0 * 1048576.0]);
        assert_eq!(axis.unit, AxisUnit::AllocatedBytes);
        assert_eq!(Axis::of(&dumps, &paths, None).values, [1.0, 4.0]);
        assert_eq!(Axis::of(&dumps, &[], Some(20)).values, [1.0, 2.0]);
        assert_eq!(format_bytes(1536.0 * 1048576.0), "1.5 GiB");
        assert_eq!(format_bytes(12.0), "12 B");
    }
}
