//! The `tally` report tool: heap dumps in jemalloc's `heap_v2` format (what Tally's profiler and
//! jemalloc's write, what Debian's `jeprof` reads) to reports of where live memory was allocated,
//! symbolized natively and offline from the memory map each dump carries.
//!
//! It links neither the allocator nor the profiler. The modules, each using only those above it:
//!
//! 1. [`error`] — the one error type: `FILE:LINE: what is wrong`, one line, exit code 2.
//! 2. [`dump`] — reading a dump (the format crate's parser) and jeprof's unbiasing.
//! 3. [`memory_map`] — which mapping, file and file offset an address falls in.
//! 4. [`demangle`] — Rust and C++ names.
//! 5. [`object_file`] — one ELF file: segments, symbol tables, DWARF, separate debug files.
//! 6. [`allocator_frames`] — which functions are the allocator's entry points.
//! 7. [`symbolize`] — addresses to interned locations, with every file and lookup cached.
//! 8. [`profile`] — numbers per symbolized stack; base subtraction, filters, flat and cumulative.
//! 9. [`render`] — the output formats (`--text`, `--collapsed`).
//!
//! [`report`] runs the whole pipeline for the `tally report` command.

pub mod allocator_frames;
pub mod demangle;
pub mod dump;
pub mod error;
pub mod memory_map;
pub mod object_file;
pub mod profile;
pub mod render;
pub mod symbolize;

use std::io::Write;
use std::path::{Path, PathBuf};

use regex::Regex;

pub use error::Error;
use profile::{Granularity, Profile, SampleType};
use symbolize::{Symbolizer, SymbolizerOptions};

/// The output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// The flat/cumulative table (`--text`).
    #[default]
    Text,
    /// Folded stacks (`--collapsed`).
    Collapsed,
}

/// Everything `tally report` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// The dump to report on.
    pub dump: PathBuf,
    /// The program, if given (otherwise the dump's memory map names every file).
    pub binary: Option<PathBuf>,
    /// An older dump to subtract (`--base`).
    pub base: Option<PathBuf>,
    /// The format.
    pub output: Output,
    /// Which number to show.
    pub sample: SampleType,
    /// Function or line rows.
    pub granularity: Granularity,
    /// At most this many rows (`--top`).
    pub top: Option<usize>,
    /// Sort by cumulative value (`--cum`).
    pub sort_by_cumulative: bool,
    /// Bytes rather than MiB (`--show-bytes`).
    pub show_bytes: bool,
    /// Keep only stacks with a matching frame (`--focus`).
    pub focus: Option<Regex>,
    /// Drop stacks with a matching frame (`--ignore`).
    pub ignore: Option<Regex>,
    /// Roots for separate debug files (`--debug-dir`; `/usr/lib/debug` if empty).
    pub debug_dirs: Vec<PathBuf>,
}

/// Reads and parses the dump at `path`.
pub fn read_dump(path: &Path) -> Result<dump::Dump, Error> {
    let metadata = std::fs::metadata(path).map_err(|e| Error::file(path, object_file::io_message(e)))?;
    if metadata.is_dir() {
        return Err(Error::file(path, "is a directory"));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, object_file::io_message(e)))?;
    dump::parse(&bytes).map_err(|e| Error::at(path, e.line, e.message))
}

/// Runs a report: reads the dumps `options` names, writes the report to `out` and hands each
/// warning (one line, no prefix) to `warn`.
pub fn report(options: &ReportOptions, out: &mut dyn Write, warn: &mut dyn FnMut(&str)) -> Result<(), Error> {
    let dump = read_dump(&options.dump)?;
    let base = options.base.as_deref().map(read_dump).transpose()?;
    let mut symbolizer = Symbolizer::new(SymbolizerOptions {
        debug_dirs: options.debug_dirs.clone(),
        binary: options.binary.clone(),
    });
    let written = write_report(&dump, base.as_ref(), options, &mut symbolizer, out);
    for warning in symbolizer.take_warnings() {
        warn(&warning);
    }
    written.and_then(|()| out.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Error::new(BROKEN_PIPE),
        _ => Error::new(format!("writing the report: {}", object_file::io_message(e))),
    })
}

/// The report on `dump` (less `base`) as `options` asks, symbolized with `symbolizer` (whose
/// caches may serve many reports). `options.dump`, `.base`, `.binary` and `.debug_dirs` are not
/// used here.
pub fn write_report(
    dump: &dump::Dump,
    base: Option<&dump::Dump>,
    options: &ReportOptions,
    symbolizer: &mut Symbolizer,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut profile = Profile::from_dump(dump, options.sample, symbolizer);
    if let Some(base) = base {
        profile.subtract(&Profile::from_dump(base, options.sample, symbolizer));
    }
    let total = profile.total();
    let mut profile = profile.without_allocator_frames(symbolizer);
    if let Some(pattern) = &options.focus {
        profile = profile.focus(pattern, symbolizer);
    }
    if let Some(pattern) = &options.ignore {
        profile = profile.ignore(pattern, symbolizer);
    }
    match options.output {
        Output::Text => {
            let rows = profile::summarize(&profile, symbolizer, options.granularity);
            let text_options = render::text::TextOptions {
                sample: options.sample,
                top: options.top,
                sort_by_cumulative: options.sort_by_cumulative,
                show_bytes: options.show_bytes,
            };
            render::text::write(out, rows, total, &text_options)
        }
        Output::Collapsed => render::collapsed::write(out, &profile, symbolizer, options.granularity),
    }
}

/// The message of the error [`report`] returns when the reader of its output went away (`| head`);
/// `main` exits quietly on it.
pub const BROKEN_PIPE: &str = "broken pipe";
