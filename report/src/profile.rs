//! A dump as numbers per symbolized stack, and the operations a report applies to it, in
//! jeprof's order (`FilterAndPrint`):
//!
//! 1. [`Profile::from_dump`]: each stack's `t*` pair, unbiased with the stack's average size
//!    ([`crate::dump::unbias`]), the chosen one of four numbers (in-use or allocated, bytes or
//!    objects); frames symbolized (every frame but the first is a return address, so 1 is
//!    subtracted before the lookup).
//! 2. [`Profile::subtract`] for `--base`: stack by stack. Stacks are keyed by *symbolized*
//!    locations, not raw addresses, so the older dump may come from another run of the program
//!    (other load addresses) as well as from an earlier moment of the same one.
//! 3. The total, taken here: percentages are of everything in the dump, before any filtering.
//! 4. [`Profile::without_allocator_frames`]: each stack loses its innermost frames up to and
//!    including the last allocation entry point ([`tally_format::frames`]).
//! 5. [`Profile::focus`] / [`Profile::ignore`]: keep the stacks where some frame's function or
//!    `file:line` matches, or where none does.
//! 6. [`summarize`]: each stack becomes a list of names (one per inline level, `name (inline)`
//!    for inlined callees, `name file:line` with `--lines`); a name seen twice in one stack
//!    (recursion) counts once; the first name gets the stack's value as *flat*, every name as
//!    *cumulative*.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

use crate::dump::{unbias, Dump};
use crate::memory_map::MemoryMap;
use crate::symbolize::{Location, LocationId, Symbolizer};

/// Which of a dump's four numbers a report shows (jeprof's `--inuse_space` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleType {
    /// Bytes live at the dump (the default).
    #[default]
    InuseSpace,
    /// Objects live at the dump.
    InuseObjects,
    /// Bytes allocated since the start (needs `prof_accum`).
    AllocSpace,
    /// Objects allocated since the start (needs `prof_accum`).
    AllocObjects,
}

impl SampleType {
    /// Whether the numbers are bytes (else objects).
    pub fn is_bytes(self) -> bool {
        matches!(self, SampleType::InuseSpace | SampleType::AllocSpace)
    }
}

/// What one row of a report stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Granularity {
    /// A function (the default).
    #[default]
    Functions,
    /// A function and source line.
    Lines,
}

/// The name of a run of unnamed frames in anonymous memory, once folded
/// ([`Profile::fold_anonymous_frames`]).
pub const ANONYMOUS_CODE: &str = "[anonymous code]";

/// Values per stack. A stack is a list of locations, innermost first.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Ordered, so that sums and outputs do not depend on hashing.
    pub stacks: BTreeMap<Vec<LocationId>, f64>,
}

impl Profile {
    /// Reads `sample` from every stack of `dump`, symbolizing its frames.
    pub fn from_dump(dump: &Dump, sample: SampleType, symbolizer: &mut Symbolizer) -> Profile {
        let map = MemoryMap::new(&dump.maps);
        let mut stacks = BTreeMap::new();
        for stack in &dump.stacks {
            let counts = match sample {
                SampleType::InuseSpace | SampleType::InuseObjects => stack.live,
                SampleType::AllocSpace | SampleType::AllocObjects => stack.accum,
            };
            let (objects, bytes) = unbias(counts, dump.period);
            let value = if sample.is_bytes() { bytes } else { objects };
            let key: Vec<LocationId> = stack
                .frames
                .iter()
                .enumerate()
                .map(|(i, &address)| {
                    let call = if i == 0 { address } else { address.wrapping_sub(1) };
                    symbolizer.symbolize(&map, call)
                })
                .collect();
            *stacks.entry(key).or_insert(0.0) += value;
        }
        Profile { stacks }
    }

    /// Subtracts `base` stack by stack (what `--base` shows: growth since `base`).
    pub fn subtract(&mut self, base: &Profile) {
        for (stack, value) in &base.stacks {
            *self.stacks.entry(stack.clone()).or_insert(0.0) -= value;
        }
    }

    /// The sum over all stacks.
    pub fn total(&self) -> f64 {
        self.stacks.values().sum()
    }

    /// Each stack without the allocator's own frames (step 4 of the module docs): the innermost
    /// frames that lie in the same library exporting `malloc`, then everything up to and
    /// including the last allocation entry point.
    pub fn without_allocator_frames(&self, symbolizer: &Symbolizer) -> Profile {
        self.map_stacks(|stack| {
            let library = match stack
                .first()
                .and_then(|&id| symbolizer.location(id).malloc_library)
            {
                Some(library) => stack
                    .iter()
                    .position(|&id| symbolizer.location(id).malloc_library != Some(library))
                    .unwrap_or(stack.len()),
                None => 0,
            };
            let stack = &stack[library..];
            let mut named = stack
                .iter()
                .rposition(|&id| symbolizer.location(id).allocator)
                .map_or(0, |i| i + 1);
            // Then Rust's allocation machinery just above the entry point (Vec, RawVec, Box...):
            // locations made only of it.
            if named > 0 {
                while named < stack.len()
                    && symbolizer
                        .location(stack[named])
                        .frames
                        .iter()
                        .all(|f| tally_format::frames::is_rust_alloc_machinery(&f.function))
                {
                    named += 1;
                }
            }
            Some(stack[named..].to_vec())
        })
    }

    /// Each stack with every run of frames in anonymous memory that no perf map named (JIT code,
    /// or a damaged frame) folded into one frame, [`ANONYMOUS_CODE`]; stacks that then read
    /// alike are merged. The frames beyond are kept: a frame-pointer walk through JIT code
    /// finds real callers there. Folding keeps one leak one stack when its unnamed JIT frames
    /// change address (the JIT compiles a method again), as `tally leaks` needs; frames a perf
    /// map named are kept as they are.
    pub fn fold_anonymous_frames(&self, symbolizer: &mut Symbolizer) -> Profile {
        let placeholder = symbolizer.placeholder(ANONYMOUS_CODE, true);
        let symbolizer = &*symbolizer;
        self.map_stacks(|stack| {
            let mut folded: Vec<LocationId> = Vec::with_capacity(stack.len());
            for &id in stack {
                if !symbolizer.location(id).is_anonymous() {
                    folded.push(id);
                } else if folded.last() != Some(&placeholder) {
                    folded.push(placeholder);
                }
            }
            Some(folded)
        })
    }

    /// Only the stacks with a frame that matches `pattern`.
    pub fn focus(&self, pattern: &Regex, symbolizer: &Symbolizer) -> Profile {
        let mut matcher = Matcher::new(pattern, symbolizer);
        self.map_stacks(|stack| {
            stack
                .iter()
                .any(|&id| matcher.matches(id))
                .then(|| stack.to_vec())
        })
    }

    /// Only the stacks with no frame that matches `pattern`.
    pub fn ignore(&self, pattern: &Regex, symbolizer: &Symbolizer) -> Profile {
        let mut matcher = Matcher::new(pattern, symbolizer);
        self.map_stacks(|stack| (!stack.iter().any(|&id| matcher.matches(id))).then(|| stack.to_vec()))
    }

    fn map_stacks(&self, mut f: impl FnMut(&[LocationId]) -> Option<Vec<LocationId>>) -> Profile {
        let mut stacks = BTreeMap::new();
        for (stack, value) in &self.stacks {
            if let Some(new) = f(stack) {
                *stacks.entry(new).or_insert(0.0) += value;
            }
        }
        Profile { stacks }
    }
}

/// Whether a location matches a pattern, cached per location.
struct Matcher<'a> {
    pattern: &'a Regex,
    symbolizer: &'a Symbolizer,
    cache: HashMap<LocationId, bool>,
}

impl<'a> Matcher<'a> {
    fn new(pattern: &'a Regex, symbolizer: &'a Symbolizer) -> Matcher<'a> {
        Matcher {
            pattern,
            symbolizer,
            cache: HashMap::new(),
        }
    }

    fn matches(&mut self, id: LocationId) -> bool {
        let (pattern, symbolizer) = (self.pattern, self.symbolizer);
        *self.cache.entry(id).or_insert_with(|| {
            symbolizer.location(id).frames.iter().any(|frame| {
                pattern.is_match(&frame.function)
                    || frame
                        .file
                        .as_ref()
                        .is_some_and(|file| pattern.is_match(&format!("{file}:{}", frame.line)))
            })
        })
    }
}

/// The names a location contributes to a stack, innermost first: one per inline level,
/// inlined callees marked `(inline)`, with ` file:line` appended at line granularity when known.
pub fn location_names(location: &Location, granularity: Granularity) -> Vec<String> {
    let outer = location.frames.len() - 1;
    location
        .frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let mut name = frame.function.clone();
            if i < outer {
                name.push_str(" (inline)");
            }
            if let (Granularity::Lines, Some(file)) = (granularity, &frame.file) {
                name = format!("{name} {file}:{}", frame.line);
            }
            name
        })
        .collect()
}

/// One row of a flat/cumulative report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The function (or function and line).
    pub name: String,
    /// The value of the stacks where this is the innermost name.
    pub flat: f64,
    /// The value of the stacks where this name appears.
    pub cumulative: f64,
}

/// Flat and cumulative values per name (step 6 of the module docs), in no particular order.
pub fn summarize(profile: &Profile, symbolizer: &Symbolizer, granularity: Granularity) -> Vec<Row> {
    let mut names: HashMap<LocationId, Vec<usize>> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut row_of: HashMap<String, usize> = HashMap::new();
    let mut seen: Vec<usize> = Vec::new();
    // `stamp[row] == generation` marks a row already seen in the current stack.
    let mut stamp: Vec<usize> = Vec::new();
    for (generation, (stack, &value)) in profile.stacks.iter().enumerate() {
        seen.clear();
        for &id in stack {
            let ids = names.entry(id).or_insert_with(|| {
                location_names(symbolizer.location(id), granularity)
                    .into_iter()
                    .map(|name| {
                        *row_of.entry(name.clone()).or_insert_with(|| {
                            rows.push(Row {
                                name,
                                flat: 0.0,
                                cumulative: 0.0,
                            });
                            rows.len() - 1
                        })
                    })
                    .collect()
            });
            stamp.resize(rows.len(), usize::MAX);
            for &row in ids.iter() {
                if stamp[row] != generation {
                    stamp[row] = generation;
                    seen.push(row);
                }
            }
        }
        // The flat value goes to the innermost name that is not Rust's allocation machinery
        // inlined into the caller (`Vec::with_capacity (inline)` and the like).
        let first = seen
            .iter()
            .find(|&&row| !tally_format::frames::is_allocator_row(&rows[row].name))
            .or(seen.first());
        if let Some(&first) = first {
            rows[first].flat += value;
        }
        for &row in &seen {
            rows[row].cumulative += value;
        }
    }
    rows
}
