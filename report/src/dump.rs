//! Reading a dump: the one place the report meets the `heap_v2` format.
//!
//! The parsing itself is the workspace's format crate (`tally-format`, the same module the
//! profiler's writer follows); this module adds what a *report* needs on top of a well-formed
//! file, and re-exports the types the rest of the report uses:
//!
//! - A dump must end with a newline. `/proc/<pid>/maps` text always does, so a last line without
//!   one was cut short (a copy taken while the dump was written, a full disk).
//! - A dump must have its `MAPPED_LIBRARIES:` section. jemalloc leaves it out only when the
//!   process could not read its own `/proc/<pid>/maps`; far more often a missing section means
//!   the file was cut at a line boundary. Without the map no frame can be named, so the report
//!   stops and says which of the two it is likely to be.
//! - [`unbias`]: jeprof's per-stack unbiasing, the format crate's `Counts::jeprof_estimate`.

pub use tally_format::{Counts, Mapping, Profile as Dump, Stack};

/// What is wrong and on which line (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The line at fault.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Parses a whole dump and checks that it is complete.
pub fn parse(text: &[u8]) -> Result<Dump, ParseError> {
    let dump = tally_format::parse(text).map_err(|e| ParseError {
        line: e.line,
        message: e.message,
    })?;
    let lines = text.split(|&b| b == b'\n').count();
    if text.last() != Some(&b'\n') {
        return Err(ParseError {
            line: lines,
            message: "the last line has no newline: the file is cut short (truncated dump)".into(),
        });
    }
    if dump.maps_text.is_none() {
        return Err(ParseError {
            line: lines - 1,
            message: "the file ends without its `MAPPED_LIBRARIES:` section (truncated dump, or \
                      the process could not read /proc/self/maps)"
                .into(),
        });
    }
    Ok(dump)
}

/// Un-biases one dump line the way jeprof does (`AdjustSamples` for `heap_v2`): with the stack's
/// average size `s/n`, both numbers scale by `1/(1 − e^(−(s/n)/T))`. Returns (objects, bytes).
pub fn unbias(counts: Counts, period: u64) -> (f64, f64) {
    let estimate = counts.jeprof_estimate(period);
    (estimate.objects, estimate.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "heap_v2/524288
  t*: 3: 300 [0: 0]
@ 0x10 0x20
  t*: 2: 200 [4: 400]

MAPPED_LIBRARIES:
00400000-00401000 r-xp 00000000 fe:00 12  /bin/a
";

    #[test]
    fn accepts_a_complete_dump() {
        let dump = parse(SMALL.as_bytes()).unwrap();
        assert_eq!(dump.stacks[0].frames, vec![0x10, 0x20]);
        assert_eq!(dump.maps.len(), 1);
    }

    #[test]
    fn refuses_a_cut_dump() {
        let cut = &SMALL.as_bytes()[..SMALL.len() - 3];
        assert_eq!(parse(cut).unwrap_err().line, 7);
        let cut = &SMALL[..SMALL.find("\nMAPPED").unwrap() + 1];
        let e = parse(cut.as_bytes()).unwrap_err();
        assert!(e.message.contains("MAPPED_LIBRARIES"), "{e:?}");
        assert_eq!(e.line, 5);
        assert_eq!(parse(b"").unwrap_err().line, 1);
    }

    #[test]
    fn unbiases_like_jeprof() {
        // One 4 KiB object sampled at T = 4 KiB stands for 1/(1-e^-1) objects.
        let (n, s) = unbias(
            Counts {
                objects: 1,
                bytes: 4096,
            },
            4096,
        );
        let scale = 1.0 / (1.0 - (-1.0f64).exp());
        assert!((n - scale).abs() < 1e-9 && (s - 4096.0 * scale).abs() < 1e-6);
        assert_eq!(unbias(Counts { objects: 0, bytes: 7 }, 4096), (0.0, 7.0));
    }
}
