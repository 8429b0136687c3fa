//! Transparent huge pages: what Tally asks of the kernel for each kind of memory it maps
//! (`thp`, [`Thp`]).
//!
//! Under a system policy of `always` (`/sys/kernel/mm/transparent_hugepage/enabled`, the default
//! of several distributions), the first touch of any 2 MiB-aligned stretch of an anonymous
//! mapping may make the whole 2 MiB resident, and `khugepaged` later fills in stretches that
//! have a single page. An arena's chunk (4 MiB, aligned) hands its pages out a slab at a time and
//! gives free pages back one run at a time, so huge pages there cost a small program about 2 MiB
//! a chunk, and every page given back splits one: with no advice the suite's peak RSS under
//! `always` was 1.53× glibc's, against 1.14× with this module's default (docs/benchmarks.md,
//! forty-third pass). By default ([`Thp::Auto`]) chunks and Tally's own tables refuse huge
//! pages, and huge blocks, which a program fills end to end, keep the system's choice. The advice
//! is one `madvise` when a mapping is made or a cached mapping becomes a chunk: never on a fast
//! path.
//!
//! The mode is set once, by initialization, before any mapping it decides is made for the
//! program (a chunk made earlier, during initialization itself, follows the default).

use core::sync::atomic::{AtomicU8, Ordering};

use tally_pal::{self as pal, HugePages};

use crate::options::Thp;

/// The mode in force, as `Thp as u8`.
static MODE: AtomicU8 = AtomicU8::new(Thp::Auto as u8);

/// Sets the mode (initialization, from `thp`).
pub fn configure(mode: Thp) {
    MODE.store(mode as u8, Ordering::Relaxed);
}

/// The mode in force.
pub fn mode() -> Thp {
    Thp::from_index(MODE.load(Ordering::Relaxed))
}

/// The kinds of mapping the mode decides for.
#[derive(Clone, Copy)]
pub enum Mapping {
    /// An arena's chunk: fresh, made of a cached huge mapping's window, or in the profiler's
    /// sampled region.
    Chunk,
    /// A huge block's fresh mapping (a cached one, or one moved by `mremap`, keeps the advice it
    /// was given when it was made).
    HugeBlock,
    /// Tally's own tables (metadata regions, page-map leaves): sparse, so never huge pages
    /// unless the system is left to decide (`thp:default`).
    Table,
}

/// What `mode` asks of the kernel for a mapping of `kind` (nothing: the system's policy).
fn advice(mode: Thp, kind: Mapping) -> Option<HugePages> {
    match (mode, kind) {
        (Thp::Default, _) | (Thp::Auto, Mapping::HugeBlock) => None,
        (Thp::Always, Mapping::Chunk | Mapping::HugeBlock) => Some(HugePages::Wanted),
        _ => Some(HugePages::Refused),
    }
}

/// Gives the mode's advice (if any) for the fresh mapping `[base, base + len)` of `kind`.
///
/// # Safety
/// The range must be page-aligned, mapped and owned by the caller.
pub unsafe fn advise(base: *mut u8, len: usize, kind: Mapping) {
    if let Some(advice) = advice(mode(), kind) {
        // SAFETY: per the contract. A refusal (a kernel without transparent huge pages) leaves
        // the range as the system's policy has it, which is all the advice could change.
        unsafe { pal::advise_huge_pages(base, len, advice) };
    }
}
