//! The profiler's Rust API: write a heap profile, switch sampling on and off, change its rate,
//! and look at the top stacks from inside the program.
//!
//! The profiler itself is switched on with `prof:true` in `TALLY_CONF` (or `MALLOC_CONF`); with
//! it off, these functions report that and do nothing.
//!
//! ```no_run
//! // For example behind a debug endpoint:
//! tally::prof::dump("/tmp/heap.prof").expect("profiling is on (TALLY_CONF=prof:true)");
//! ```

use core::fmt;
use std::path::Path;

use tally_profiler as profiler;

use crate::prof_hooks;

/// Why a profile could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpError {
    /// The profiler is off (`prof:false`).
    ProfilerOff,
    /// The path is not valid (not UTF-8 free of NUL, or too long).
    BadPath,
    /// The operating system refused (an `errno` value).
    Os(i32),
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpError::ProfilerOff => write!(f, "the heap profiler is off (set TALLY_CONF=prof:true)"),
            DumpError::BadPath => write!(f, "the path cannot name a profile file"),
            DumpError::Os(e) => write!(f, "{}", tally_pal::OsError(*e)),
        }
    }
}

impl std::error::Error for DumpError {}

fn convert(e: profiler::DumpError) -> DumpError {
    match e {
        profiler::DumpError::Off => DumpError::ProfilerOff,
        profiler::DumpError::Os(e) => DumpError::Os(e),
        _ => DumpError::BadPath,
    }
}

/// Writes a heap profile (jemalloc's `heap_v2` format, read by `tally report` and `jeprof`) to
/// `path`: first to a new private file of a random name next to it (`O_EXCL`, mode 0600), then
/// renamed, so the profile is the writer's own even in a shared directory such as `/tmp`.
pub fn dump(path: impl AsRef<Path>) -> Result<(), DumpError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_ref().as_os_str().as_bytes();
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(DumpError::BadPath);
    }
    prof_hooks::dump_to(bytes).map_err(convert)
}

/// Writes a heap profile named after `prof_prefix` (`<prefix>.<pid>.<seq>.m<n>.heap`).
pub fn dump_auto() -> Result<(), DumpError> {
    prof_hooks::dump_manual().map(|_| ()).map_err(convert)
}

/// Starts sampling (with `prof:true`; for programs started with `prof_active:false`). Returns
/// false if the profiler is off.
pub fn activate() -> bool {
    profiler::PROFILER.sampling.set_active(true)
}

/// Stops sampling; what was sampled stays in the profile until freed. Returns false if the
/// profiler is off.
pub fn deactivate() -> bool {
    profiler::PROFILER.sampling.set_active(false)
}

/// The address range set apart for the sampled blocks of the classes the thread cache keeps (up
/// to 32 KiB), if the profiler is on and the address space allowed one (16 GiB reserved, none
/// of it used until a block is sampled): while it has room, every such sampled block lies in it
/// and nothing else Tally hands out does, which is how Rust's `dealloc` tells sampled blocks
/// from the others without looking at their pages. `None` with the profiler off, or when the
/// reservation was refused (`ulimit -v`): sampled blocks then lie among the others.
pub fn sampled_region() -> Option<core::ops::Range<usize>> {
    prof_hooks::sampled_region().map(|(base, len)| base..base + len)
}

/// Whether sampling is active.
pub fn is_active() -> bool {
    profiler::PROFILER.sampling.is_active()
}

/// Sets the mean sampling distance to `2^lg` bytes for the samples to come. Returns false if
/// the profiler is off.
pub fn set_sample_rate(lg: u32) -> bool {
    if !prof_hooks::profiler_on() {
        return false;
    }
    // Distances are capped at 2^40 bytes anyway (a thread's idle distance).
    profiler::PROFILER.sampling.set_lg(lg.min(40));
    true
}

/// Forgets everything sampled so far (jemalloc's `prof.reset`): profiles written afterwards show
/// only what is sampled from now on. Returns false if the profiler is off.
pub fn reset() -> bool {
    if !prof_hooks::profiler_on() {
        return false;
    }
    profiler::PROFILER.reset();
    true
}

/// The live sampled heap now as a gzipped pprof `profile.proto` (the bytes `go tool pprof`,
/// Pyroscope and Parca read; `inuse_space` first): for a service that serves its own
/// `/debug/pprof/heap` (what `prof_http` serves there). Functions are named from the objects'
/// symbol tables, and mappings carry each object's path and build id, from which the tools can
/// add files and lines. Each stack starts at the function that asked for memory (the
/// allocator's frames left out). An empty profile when the profiler is off.
///
/// ```no_run
/// std::fs::write("/tmp/heap.pb.gz", tally::prof::pprof()).unwrap();
/// // go tool pprof -top /tmp/heap.pb.gz
/// ```
pub fn pprof() -> Vec<u8> {
    crate::pprof::live_heap(false)
}

/// One stack of the profile: its frames (innermost first, return addresses) and the estimated
/// live objects and bytes it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct StackSnapshot {
    /// Frame addresses, innermost first.
    pub frames: Vec<usize>,
    /// Estimated live objects (unbiased).
    pub objects: f64,
    /// Estimated live bytes (unbiased).
    pub bytes: f64,
}

/// The `n` stacks holding the most live bytes now, largest first.
pub fn top_stacks(n: usize) -> Vec<StackSnapshot> {
    // Collect first without allocating (the stack table's iterator takes no lock that
    // allocation could need), then build the result.
    const MAX: usize = 256;
    let mut best: [(f64, f64, u32); MAX] = [(0.0, 0.0, u32::MAX); MAX];
    let n = n.min(MAX);
    let mut count = 0;
    for (i, s) in profiler::PROFILER.stacks.iter().enumerate() {
        if s.live.bytes <= 0.0 || n == 0 {
            continue;
        }
        let entry = (s.live.bytes, s.live.objects, i as u32);
        if count < n {
            best[count] = entry;
            count += 1;
        } else if let Some(min) = (0..n).min_by(|&a, &b| best[a].0.total_cmp(&best[b].0)) {
            if best[min].0 < entry.0 {
                best[min] = entry;
            }
        }
    }
    let mut chosen: Vec<(f64, f64, u32)> = best[..count].to_vec();
    chosen.sort_by(|a, b| b.0.total_cmp(&a.0));
    chosen
        .into_iter()
        .filter_map(|(bytes, objects, i)| {
            let s = profiler::PROFILER.stacks.iter().nth(i as usize)?;
            Some(StackSnapshot {
                frames: s.frames.to_vec(),
                objects,
                bytes,
            })
        })
        .collect()
}
