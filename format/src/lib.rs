//! Tally's dump format: jemalloc's `heap_v2` text, written down once.
//!
//! The profiler writes dumps with [`Writer`]; the report tool reads them with [`parse()`] (feature
//! `std`); the round-trip tests hold the two together, and `docs/heap-format.md` describes the
//! same format in prose. Everything here is chosen so that Debian's unmodified `jeprof` reads
//! what Tally writes.
//!
//! - [`math`]: `exp`, `expm1` and `ln` for `f64` without `std`.
//! - [`estimate`]: per-sample unbiasing, the back-solving of what to write so that jeprof's
//!   per-stack unbiasing lands on Tally's estimate, and the inverse (what jeprof computes).
//! - [`write`](mod@write): the writer; no allocation, no `core::fmt`, bytes go to a caller's [`Sink`].
//! - [`parse`](mod@parse) (feature `std`): a whole dump into a [`Profile`], with `LINE: what is wrong`
//!   errors and no panic on any input.
//! - [`pprof`] (feature `std`): Google's pprof `profile.proto`, built table by table and encoded.
//! - [`frames`]: which functions are the allocator's entry points and Rust's allocation
//!   machinery, so that a report or profile starts at the code that asked for memory.
//! - [`demangle`] (feature `demangle`): Rust and C++ symbol names as people write them.
//! - [`perf_map`] (feature `std`): perf maps (`/tmp/perf-<pid>.map`), the names JIT compilers
//!   give their code, readable.
//!
//! Without the `std` feature the crate is `no_std` and uses neither `alloc` nor a global
//! allocator, so the profiler can link it into the allocator itself.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "demangle")]
pub mod demangle;
pub mod estimate;
pub mod frames;
pub mod math;
#[cfg(feature = "std")]
pub mod parse;
#[cfg(feature = "std")]
pub mod perf_map;
#[cfg(feature = "std")]
pub mod pprof;
pub mod write;

pub use estimate::{Counts, Estimate};
#[cfg(feature = "std")]
pub use parse::{parse, Mapping, ParseError, Profile, Stack};
pub use write::{Sink, SinkError, SliceSink, WriteError, Writer};
