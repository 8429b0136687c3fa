//! The pipelines of the `tally report` and `tally leaks` commands: read dumps, symbolize,
//! compute, render, write. Everything here only calls the modules below it; `run` (for
//! `tally run`) calls these.

use std::io::Write;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::error::Error;
use crate::leaks::{self};
use crate::memory_map::MemoryMap;
use crate::perf_map_finder::Finder;
use crate::profile::{Granularity, Profile, Row, SampleType};
use crate::series::Axis;
use crate::symbolize::{Symbolizer, SymbolizerOptions};
use crate::{dump, hints, object_file, profile, render, series};

/// The output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// The flat/cumulative table (`--text`).
    #[default]
    Text,
    /// Folded stacks (`--collapsed`).
    Collapsed,
    /// Gzipped `profile.proto` (`--pprof`).
    Pprof,
    /// The call graph in Graphviz's language (`--dot`).
    Dot,
    /// The call graph drawn by `dot` (`--svg`).
    Svg,
    /// A flame graph SVG (`--flame`).
    Flame,
    /// One self-contained HTML page (`--html`).
    Html,
}

/// Everything `tally report` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// The dumps: the report is on the last; with `--html`, earlier ones make the growth chart.
    pub dumps: Vec<PathBuf>,
    /// The program, if given (otherwise the dump's memory map names every file).
    pub binary: Option<PathBuf>,
    /// An older dump to subtract (`--base`).
    pub base: Option<PathBuf>,
    /// The format.
    pub output: Output,
    /// Where to write it (`None` or `-`: standard output).
    pub output_file: Option<PathBuf>,
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
    /// `lg_prof_interval` of the series' interval dumps, when known (`--lg-interval`).
    pub lg_interval: Option<u32>,
    /// The perf map naming JIT code (`--perf-map`), instead of each dump's `/tmp/perf-<pid>.map`.
    pub perf_map: Option<PathBuf>,
}

/// Rows the HTML page's table shows before its toggle unless `--top` says otherwise.
const HTML_ROWS: usize = 20;
/// Functions the HTML page's growth chart follows.
const CHART_FUNCTIONS: usize = 5;

/// Reads and parses the dump at `path`.
pub fn read_dump(path: &Path) -> Result<dump::Dump, Error> {
    let metadata = std::fs::metadata(path).map_err(|e| Error::file(path, object_file::io_message(e)))?;
    if metadata.is_dir() {
        return Err(Error::file(path, "is a directory"));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, object_file::io_message(e)))?;
    dump::parse(&bytes).map_err(|e| Error::at(path, e.line, e.message))
}

/// Splits `[BINARY] DUMP...`: with two files or more, the first is the program when it is an
/// ELF file.
pub fn split_binary(mut files: Vec<PathBuf>) -> (Option<PathBuf>, Vec<PathBuf>) {
    let is_elf = |path: &Path| {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"\x7fELF"
    };
    if files.len() >= 2 && is_elf(&files[0]) {
        let binary = files.remove(0);
        (Some(binary), files)
    } else {
        (None, files)
    }
}

/// Reads the dumps of a series, in order (see [`series::order`]); hands a warning to `warn`.
fn read_series(
    paths: &[PathBuf],
    warn: &mut dyn FnMut(&str),
) -> Result<(Vec<PathBuf>, Vec<dump::Dump>), Error> {
    let (paths, warning) = series::order(paths.to_vec());
    if let Some(warning) = warning {
        warn(&warning);
    }
    let dumps = paths
        .iter()
        .map(|p| read_dump(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((paths, dumps))
}

/// Gives `symbolizer` the perf map of each dump (see [`crate::perf_map_finder`]); `given` is
/// `--perf-map`, used for the dumps of `series` only (a `--base` dump may come from another run).
fn add_jit_names(
    symbolizer: &mut Symbolizer,
    given: Option<&Path>,
    series: (&[PathBuf], &[dump::Dump]),
    base: Option<(&Path, &dump::Dump)>,
    warn: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let mut finder = Finder::new(given, warn)?;
    for (path, dump) in series.0.iter().zip(series.1) {
        let names = finder.names(path, dump, warn);
        symbolizer.add_jit_names(&MemoryMap::new(&dump.maps), names);
    }
    if let Some((path, dump)) = base {
        let names = if given.is_some() {
            Finder::new(None, warn)?.names(path, dump, warn)
        } else {
            finder.names(path, dump, warn)
        };
        // The base's names apply only if its address space differs from the series' dumps.
        let map = MemoryMap::new(&dump.maps);
        if !series
            .1
            .iter()
            .any(|d| MemoryMap::new(&d.maps).key() == map.key())
        {
            symbolizer.add_jit_names(&map, names);
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` (`-`: to `out`), unless `path` is a file no report should replace
/// ([`precious`]).
fn write_output(path: &Path, bytes: &[u8], out: &mut dyn Write) -> Result<(), Error> {
    if path == Path::new("-") {
        return out.write_all(bytes).map_err(io_error);
    }
    if let Some(what) = precious(path) {
        return Err(Error::file(
            path,
            format!(
                "is {what}: not overwritten with the report (the option takes the output file first: --pprof OUT.pb.gz DUMP)"
            ),
        ));
    }
    std::fs::write(path, bytes).map_err(|e| Error::file(path, object_file::io_message(e)))
}

/// What `path` is if it is a file that a mistyped command line would name as the output and
/// whose loss would hurt: a program (an executable file), or a heap dump (the input given where
/// the output belongs). Anything else, or nothing yet, is `None`.
fn precious(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o111 != 0 {
        return Some("an executable file");
    }
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    (head[..n] == *b"heap_v2/").then_some("a heap dump")
}

/// An error writing the report.
fn io_error(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => Error::new(BROKEN_PIPE),
        _ => Error::new(format!("writing the report: {}", object_file::io_message(e))),
    }
}

/// Runs a report: reads the dumps `options` names, writes the report to `out` (or to
/// `options.output_file`) and hands each warning (one line, no prefix) to `warn`.
pub fn report(options: &ReportOptions, out: &mut dyn Write, warn: &mut dyn FnMut(&str)) -> Result<(), Error> {
    if options.dumps.is_empty() {
        return Err(Error::new("no dump given"));
    }
    let (paths, dumps) = read_series(&options.dumps, warn)?;
    if dumps.len() > 1 && options.output != Output::Html {
        return Err(Error::new(format!(
            "{} dumps given: a series is drawn only by --html (and ranked by `tally leaks`); give \
             one DUMP, and --base OLD for the growth between two",
            dumps.len()
        )));
    }
    let base = options.base.as_deref().map(read_dump).transpose()?;
    let mut symbolizer = Symbolizer::new(SymbolizerOptions {
        debug_dirs: options.debug_dirs.clone(),
        binary: options.binary.clone(),
    });
    add_jit_names(
        &mut symbolizer,
        options.perf_map.as_deref(),
        (&paths, &dumps),
        options.base.as_deref().zip(base.as_ref()),
        warn,
    )?;
    let ordered = ReportOptions {
        dumps: paths,
        ..options.clone()
    };
    let to_file = options
        .output_file
        .as_deref()
        .filter(|path| *path != Path::new("-"));
    let mut buffer = Vec::new();
    let target: &mut dyn Write = if to_file.is_some() { &mut buffer } else { out };
    let written = write_report(&dumps, base.as_ref(), &ordered, &mut symbolizer, target);
    for warning in symbolizer.take_warnings() {
        warn(&warning);
    }
    written?;
    if let Some(path) = to_file {
        write_output(path, &buffer, out)?;
    }
    out.flush().map_err(io_error)
}

/// One number of a dump (less `base`) as the report counts it: the profile after allocator
/// frames, `--focus` and `--ignore`, and the whole dump's total before them.
fn prepared(
    dump: &dump::Dump,
    base: Option<&dump::Dump>,
    sample: SampleType,
    options: &ReportOptions,
    symbolizer: &mut Symbolizer,
) -> (Profile, f64) {
    let mut profile = Profile::from_dump(dump, sample, symbolizer);
    if let Some(base) = base {
        profile.subtract(&Profile::from_dump(base, sample, symbolizer));
    }
    let total = profile.total();
    let mut profile = profile.without_allocator_frames(symbolizer);
    if let Some(pattern) = &options.focus {
        profile = profile.focus(pattern, symbolizer);
    }
    if let Some(pattern) = &options.ignore {
        profile = profile.ignore(pattern, symbolizer);
    }
    (profile, total)
}

/// The largest stacks of `profile` and their hints ([`hints`]). JIT frames a perf map named are
/// kept; each run of unnamed ones is one `[anonymous code]` frame (their addresses would split
/// one leak into many stacks), with the frames beyond it kept.
fn largest_stacks(
    profile: &Profile,
    options: &ReportOptions,
    symbolizer: &mut Symbolizer,
) -> Vec<hints::Stack<'static>> {
    let folded = profile.fold_anonymous_frames(symbolizer);
    let symbolizer = &*symbolizer;
    let min_hint_value = if options.sample.is_bytes() {
        hints::MIN_HINT_BYTES
    } else {
        0.0
    };
    hints::largest(
        &folded,
        symbolizer,
        options.granularity,
        hints::known(),
        min_hint_value,
    )
}

/// The rows of a table as `--text` orders them, without the empty ones.
fn sorted_rows(mut rows: Vec<Row>, by_cumulative: bool) -> Vec<Row> {
    let key = |row: &Row| if by_cumulative { row.cumulative } else { row.flat };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    rows.retain(|row| row.flat != 0.0 || row.cumulative != 0.0);
    rows
}

/// The report on the last of `series` (less `base`) as `options` asks, symbolized with
/// `symbolizer` (whose caches may serve many reports). Earlier dumps of `series` are used by
/// `--html` only (the growth chart); `options.dumps` names the series' files when known.
/// `options.base`, `.binary`, `.debug_dirs` and `.output_file` are not used here.
pub fn write_report(
    series: &[dump::Dump],
    base: Option<&dump::Dump>,
    options: &ReportOptions,
    symbolizer: &mut Symbolizer,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let Some(dump) = series.last() else {
        return Err(Error::new("no dump given"));
    };
    let title = options.dumps.last().and_then(|p| p.file_name()).map_or_else(
        || "heap profile".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match options.output {
        Output::Text => {
            let (profile, total) = prepared(dump, base, options.sample, options, symbolizer);
            let rows = profile::summarize(&profile, symbolizer, options.granularity);
            let text_options = render::text::TextOptions {
                sample: options.sample,
                top: options.top,
                sort_by_cumulative: options.sort_by_cumulative,
                show_bytes: options.show_bytes,
            };
            render::text::write(out, rows, total, &text_options).map_err(io_error)?;
            let stacks = largest_stacks(&profile, options, symbolizer);
            render::text::write_stacks(out, &stacks, profile.total(), &text_options).map_err(io_error)
        }
        Output::Collapsed => {
            let (profile, _) = prepared(dump, base, options.sample, options, symbolizer);
            render::collapsed::write(out, &profile, symbolizer, options.granularity).map_err(io_error)
        }
        Output::Pprof => {
            let mut samples = render::pprof::Samples::new();
            for (i, (sample, _, _)) in render::pprof::SAMPLE_TYPES.iter().enumerate() {
                let (profile, _) = prepared(dump, base, *sample, options, symbolizer);
                for (stack, value) in profile.stacks {
                    samples.entry(stack).or_insert([0.0; 4])[i] += value;
                }
            }
            render::pprof::write(out, dump, &samples, symbolizer, options.sample).map_err(io_error)
        }
        Output::Dot | Output::Svg => {
            let (profile, total) = prepared(dump, base, options.sample, options, symbolizer);
            let rows = profile::summarize(&profile, symbolizer, options.granularity);
            let graph_options = render::graph::GraphOptions {
                title: &title,
                sample: options.sample,
                granularity: options.granularity,
                total,
            };
            let mut dot = Vec::new();
            render::graph::write_dot(&mut dot, &profile, &rows, symbolizer, &graph_options)
                .map_err(io_error)?;
            if options.output == Output::Dot {
                out.write_all(&dot).map_err(io_error)
            } else {
                let svg = render::graph::render_svg(&dot).map_err(Error::new)?;
                out.write_all(&svg).map_err(io_error)
            }
        }
        Output::Flame => {
            let (profile, _) = prepared(dump, base, options.sample, options, symbolizer);
            let flame_options = render::flame::FlameOptions {
                title: &title,
                sample: options.sample,
                granularity: options.granularity,
                inline: false,
            };
            render::flame::write(out, &profile, symbolizer, &flame_options).map_err(io_error)
        }
        Output::Html => write_html(series, base, options, &title, symbolizer, out),
    }
}

fn write_html(
    series: &[dump::Dump],
    base: Option<&dump::Dump>,
    options: &ReportOptions,
    title: &str,
    symbolizer: &mut Symbolizer,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let dump = series.last().expect("not empty");
    let (profile, total) = prepared(dump, base, options.sample, options, symbolizer);
    let rows = sorted_rows(
        profile::summarize(&profile, symbolizer, options.granularity),
        options.sort_by_cumulative,
    );
    let stacks = largest_stacks(&profile, options, symbolizer);
    let mut flame = Vec::new();
    let flame_options = render::flame::FlameOptions {
        title,
        sample: options.sample,
        granularity: options.granularity,
        inline: true,
    };
    render::flame::write(&mut flame, &profile, symbolizer, &flame_options).map_err(io_error)?;
    let flame = String::from_utf8_lossy(&flame);

    let axis;
    let mut totals = Vec::new();
    let mut functions: Vec<(String, Vec<f64>)> = rows
        .iter()
        .filter(|row| row.flat > 0.0)
        .take(CHART_FUNCTIONS)
        .map(|row| (row.name.clone(), Vec::new()))
        .collect();
    let growth = if series.len() > 1 {
        axis = Axis::of(series, &options.dumps, options.lg_interval);
        for earlier in series {
            let (profile, total) = prepared(earlier, None, options.sample, options, symbolizer);
            let rows = profile::summarize(&profile, symbolizer, options.granularity);
            totals.push(total);
            for (name, values) in &mut functions {
                values.push(
                    rows.iter()
                        .find(|row| &row.name == name)
                        .map_or(0.0, |row| row.flat),
                );
            }
        }
        Some(render::html::Growth {
            axis: &axis,
            totals: &totals,
            functions,
        })
    } else {
        None
    };
    let report = render::html::HtmlReport {
        title,
        sample: options.sample,
        total,
        rows: &rows,
        visible_rows: options.top.unwrap_or(HTML_ROWS),
        stacks: &stacks,
        shown: profile.total(),
        flame: &flame,
        growth,
    };
    render::html::write(out, &report).map_err(io_error)
}

/// Everything `tally leaks` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct LeaksOptions {
    /// The series of dumps (ordered by their names' sequence numbers when those parse).
    pub dumps: Vec<PathBuf>,
    /// The program, if given.
    pub binary: Option<PathBuf>,
    /// Roots for separate debug files.
    pub debug_dirs: Vec<PathBuf>,
    /// `lg_prof_interval` of the interval dumps, when known (`--lg-interval`).
    pub lg_interval: Option<u32>,
    /// At most this many suspects.
    pub top: usize,
    /// At most this many frames per suspect.
    pub depth: usize,
    /// Function or line names.
    pub granularity: Granularity,
    /// Also write the HTML report here.
    pub html: Option<PathBuf>,
    /// What counts as steady growth.
    pub thresholds: leaks::Thresholds,
    /// The perf map naming JIT code (`--perf-map`), instead of `/tmp/perf-<pid>.map`.
    pub perf_map: Option<PathBuf>,
}

/// The frame that stands for a stack's JIT callers while `tally leaks` follows the stacks through
/// one native call site together ([`leaks::group_jit_callers`]); never printed.
const JIT_CALLERS: &str = "[JIT callers]";

/// The fewest dumps `tally leaks` ranks.
pub const LEAKS_MIN_DUMPS: usize = 3;

/// Runs `tally leaks`: ranks the stacks of a series by steady growth of live bytes, writes the
/// suspects to `out` (and the HTML report to `options.html`).
pub fn leaks(options: &LeaksOptions, out: &mut dyn Write, warn: &mut dyn FnMut(&str)) -> Result<(), Error> {
    if options.dumps.len() < LEAKS_MIN_DUMPS {
        return Err(Error::new(format!(
            "leaks: needs a series of at least {LEAKS_MIN_DUMPS} dumps of one process (interval \
             dumps, lg_prof_interval), got {}",
            options.dumps.len()
        )));
    }
    let (paths, dumps) = read_series(&options.dumps, warn)?;
    let mut symbolizer = Symbolizer::new(SymbolizerOptions {
        debug_dirs: options.debug_dirs.clone(),
        binary: options.binary.clone(),
    });
    add_jit_names(
        &mut symbolizer,
        options.perf_map.as_deref(),
        (&paths, &dumps),
        None,
        warn,
    )?;
    let axis = Axis::of(&dumps, &paths, options.lg_interval);
    let profiles: Vec<Profile> = dumps
        .iter()
        .map(|dump| {
            Profile::from_dump(dump, SampleType::InuseSpace, &mut symbolizer)
                .without_allocator_frames(&symbolizer)
                .fold_anonymous_frames(&mut symbolizer)
        })
        .collect();
    let period = dumps.iter().map(|d| d.period).max().unwrap_or(0) as f64;
    let marker = symbolizer.placeholder(JIT_CALLERS, true);
    let (grouped, shown) = leaks::group_jit_callers(&profiles, &symbolizer, marker);
    let mut growers = leaks::rank(&grouped, &axis, period, &options.thresholds);
    for trend in &mut growers {
        if let Some((stack, stacks)) = shown.get(&trend.stack) {
            trend.stack = stack.clone();
            trend.stacks = *stacks;
        }
    }
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    let totals = leaks::totals(&profiles);
    let report = leaks::LeakReport {
        names: &names,
        axis: &axis,
        growers: &growers,
        totals: &totals,
        top: options.top,
        depth: options.depth,
        granularity: options.granularity,
        hints: hints::known(),
    };
    let written = leaks::write_text(out, &report, &symbolizer).map_err(io_error);
    for warning in symbolizer.take_warnings() {
        warn(&warning);
    }
    written?;
    if let Some(path) = &options.html {
        let mut buffer = Vec::new();
        leaks::write_html(&mut buffer, &report, &symbolizer).map_err(io_error)?;
        write_output(path, &buffer, out)?;
    }
    out.flush().map_err(io_error)
}

/// The message of the error [`report`] returns when the reader of its output went away (`| head`);
/// `main` exits quietly on it.
pub const BROKEN_PIPE: &str = "broken pipe";
