//! Guarded-sampling reports, named offline: `tally symbolize`, and `tally run --guard`.
//!
//! When the allocator catches a use-after-free, an overflow or a bad free of a guarded block, it
//! writes a report to standard error (and to `<guard_report>.<pid>.guard` when that option is
//! set). It writes it from a signal handler, so it cannot allocate, and names frames only by
//! their dynamic symbols; but every frame carries the file it lies in and its ELF virtual
//! address there, which is all an offline symbolizer needs:
//!
//! ```text
//! tally: guard: use-after-free: write at 0x7f0c1a2b3f08, 8 bytes into the 64-byte block at 0x7f0c1a2b3f00
//! tally: guard: allocated by thread 4242:
//! tally: guard:   #0 0x000055f1d2a011a9 in make_block+0x20 (/tmp/x/uaf+0x11a9)
//! tally: guard:   #1 0x000055f1d2a01200 (/tmp/x/uaf+0x1200)
//! tally: guard:   #2 0x00007f0c1a000010
//! ```
//!
//! A *frame line* is `#N 0xADDR`, anywhere in the line after the start or white space (a log's
//! timestamps may come first), then optionally ` in SYMBOL+0xOFF`, then optionally the *object
//! group* `(OBJECT+0xVADDR)`: the last parenthesized group after the address whose content ends
//! in `+0x<hex>` (OBJECT may hold spaces, not parentheses). Every frame is a return address, so
//! `VADDR − 1`, the call, is looked up (but the frame under `access at:`, the faulting
//! instruction itself, at `VADDR`), in OBJECT's DWARF (or its separate debug file, found as
//! [`crate::object_file`] finds them) and else its symbol tables; the line keeps its numbers:
//!
//! ```text
//! tally: guard:   #0 0x000055f1d2a011a9 in inner at /tmp/x/uaf.c:7 (inlined)
//! tally: guard:   #0 0x000055f1d2a011a9 in make_block at /tmp/x/uaf.c:12 (/tmp/x/uaf+0x11a9)
//! ```
//!
//! An inline chain prints innermost first, one line per level with the same `#N`, the marker
//! `(inlined)` standing for the object group on all but the last (outermost) level. A name
//! without a known source line prints without `at`. A frame that cannot be resolved (no object
//! group, an object that cannot be read, an address outside its loadable segments or that
//! nothing names) and every other line are copied byte for byte, line ends included.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use crate::object_file::ObjectFile;
use tally_format::demangle::demangle;

/// `#N 0xADDR` after the start of the line or white space; the address ends at a non-word
/// character or the end of the line.
static FRAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|\s)#([0-9]+) +(0x[0-9A-Fa-f]+)\b").expect("a valid regex"));

/// An object group, ` (OBJECT+0xVADDR)`: the path is everything up to the last `+0x` inside,
/// and holds no parentheses.
static OBJECT_GROUP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[ \t]\(([^()]+)\+0x([0-9A-Fa-f]+)\)").expect("a valid regex"));

/// The object group of an absolute path that holds parentheses, when no group matches
/// [`OBJECT_GROUP`]: from the first ` (/` to the last `+0x<hex>)`.
static OBJECT_GROUP_WITH_PARENTHESES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[ \t]\((/.*)\+0x([0-9A-Fa-f]+)\)").expect("a valid regex"));

/// One frame line of a report, cut into its parts (slices of the line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLine<'a> {
    /// Everything before `#N`: the report's `tally: guard:   `, or a log's prefix.
    pub prefix: &'a str,
    /// The frame's number, `N` of `#N`, as written.
    pub number: &'a str,
    /// The runtime address, `0x…`, as written.
    pub address: &'a str,
    /// The dynamic symbol between ` in ` and the object group, `make_block+0x20`, if any.
    pub symbol: Option<&'a str>,
    /// Where the frame lies, if the line says.
    pub object: Option<ObjectPlace<'a>>,
    /// What follows the frame: after the object group when there is one, else after the
    /// address (and its symbol); usually empty.
    pub rest: &'a str,
}

/// The object group of a frame line, `(OBJECT+0xVADDR)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPlace<'a> {
    /// The object file's path, as written.
    pub path: &'a str,
    /// The ELF virtual address inside it.
    pub address: u64,
    /// The whole group, parentheses included, as written.
    pub group: &'a str,
}

/// Cuts `line` (without its line end) into a frame, or `None` when it holds no frame.
pub fn parse_frame(line: &str) -> Option<FrameLine<'_>> {
    let captures = FRAME.captures(line)?;
    let number = captures.get(1).expect("group 1 always takes part");
    let address = captures.get(2).expect("group 2 always takes part");
    let prefix = &line[..number.start() - 1];
    let after = &line[address.end()..];
    let group = OBJECT_GROUP
        .captures_iter(after)
        .last()
        .or_else(|| OBJECT_GROUP_WITH_PARENTHESES.captures(after))
        .and_then(|c| {
            let vaddr = u64::from_str_radix(c.get(2)?.as_str(), 16).ok()?;
            Some((c.get(0)?, c.get(1)?, vaddr))
        });
    let (object, symbol_text, rest) = match group {
        Some((whole, path, vaddr)) => (
            Some(ObjectPlace {
                path: path.as_str(),
                address: vaddr,
                // Without the space or tab (one byte) the match starts with.
                group: &after[whole.start() + 1..whole.end()],
            }),
            &after[..whole.start()],
            &after[whole.end()..],
        ),
        None => (None, after, ""),
    };
    let (symbol, rest) = match symbol_text.strip_prefix(" in ") {
        Some(symbol) if object.is_some() => (Some(symbol.trim()).filter(|s| !s.is_empty()), rest),
        Some(text) => {
            let symbol = text.split_whitespace().next();
            let end = symbol.map_or(0, |s| text.find(s).unwrap_or(0) + s.len());
            (symbol, &text[end..])
        }
        None if object.is_some() => (None, rest),
        None => (None, symbol_text),
    };
    Some(FrameLine {
        prefix,
        number: number.as_str(),
        address: address.as_str(),
        symbol,
        object,
        rest,
    })
}

/// A report with its frames named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolizedReport {
    /// The report, every frame that could be resolved named, everything else as it was.
    pub text: Vec<u8>,
    /// How many frame lines it had (0: not a guard report).
    pub frames: usize,
    /// How many of them were resolved.
    pub resolved: usize,
    /// One line each, without a prefix: `cannot read OBJECT: reason` for each object that could
    /// not be read, and what loading the others had to say (a debug file refused).
    pub warnings: Vec<String>,
}

/// Names the frames of the guard report `report` (module docs), looking for separate debug
/// files under `debug_dirs` (`/usr/lib/debug` if empty). Each object is read once.
pub fn symbolize_report(report: &[u8], debug_dirs: &[PathBuf]) -> SymbolizedReport {
    let default_dirs = [PathBuf::from("/usr/lib/debug")];
    let debug_dirs = if debug_dirs.is_empty() {
        &default_dirs[..]
    } else {
        debug_dirs
    };
    let mut objects: HashMap<String, Option<ObjectFile>> = HashMap::new();
    let mut symbolized = SymbolizedReport::default();
    // The frame under `access at:` is the faulting instruction itself, not a return address:
    // it is looked up where it is (the instruction before it may be a call on another line).
    let mut faulting = false;
    for chunk in report.split_inclusive(|&b| b == b'\n') {
        let (line, end) = split_line_end(chunk);
        let text = String::from_utf8_lossy(line);
        let Some(frame) = parse_frame(&text) else {
            faulting = text.trim_end().ends_with("access at:");
            symbolized.text.extend_from_slice(chunk);
            continue;
        };
        symbolized.frames += 1;
        let resolved = frame.object.as_ref().and_then(|place| {
            let object = objects
                .entry(place.path.to_string())
                .or_insert_with(|| load(place.path, debug_dirs, &mut symbolized.warnings));
            let lookup = if faulting {
                place.address
            } else {
                place.address.checked_sub(1)?
            };
            resolve(object.as_ref()?, lookup)
        });
        match resolved {
            Some(levels) => {
                symbolized.resolved += 1;
                write_levels(&frame, &levels, end, &mut symbolized.text);
            }
            None => symbolized.text.extend_from_slice(chunk),
        }
    }
    symbolized
}

/// `line` without its end (`\n` or `\r\n`), and that end (empty on an unterminated last line).
fn split_line_end(chunk: &[u8]) -> (&[u8], &[u8]) {
    let content = chunk.strip_suffix(b"\n").unwrap_or(chunk);
    let content = if content.len() < chunk.len() {
        content.strip_suffix(b"\r").unwrap_or(content)
    } else {
        content
    };
    chunk.split_at(content.len())
}

/// Loads the object at `path`, adding a warning when it cannot be read and its notes when it
/// can.
fn load(path: &str, debug_dirs: &[PathBuf], warnings: &mut Vec<String>) -> Option<ObjectFile> {
    match ObjectFile::load(Path::new(path), debug_dirs) {
        Ok(object) => {
            warnings.extend(object.notes.iter().cloned());
            Some(object)
        }
        Err(reason) => {
            warnings.push(format!("cannot read {path}: {reason}"));
            None
        }
    }
}

/// One level of a resolved frame's inline chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Level {
    function: Option<String>,
    file: Option<String>,
    line: u32,
}

/// The inline chain, innermost first, of the instruction at `vaddr` of `object` (for a return
/// address, the caller passes the address before it: the call); `None` when it lies outside the
/// object's loadable segments or nothing names it.
fn resolve(object: &ObjectFile, vaddr: u64) -> Option<Vec<Level>> {
    if !object.maps_address(vaddr) {
        return None;
    }
    let lookup = object.lookup(vaddr);
    let levels: Vec<Level> = lookup
        .frames
        .into_iter()
        .map(|frame| Level {
            function: frame.function,
            file: frame.file,
            line: frame.line,
        })
        .collect();
    let named = levels
        .iter()
        .any(|level| level.function.is_some() || level.file.is_some());
    named.then_some(levels)
}

/// Writes the lines of `frame` resolved to `levels`, each ended with `end` (`\n` between them
/// when `end` is empty: an unterminated last line).
fn write_levels(frame: &FrameLine<'_>, levels: &[Level], end: &[u8], out: &mut Vec<u8>) {
    let place = frame.object.as_ref().expect("only frames with an object resolve");
    // The report's own symbol, for an outermost level DWARF and the symbol tables left
    // unnamed.
    let dynamic_symbol = frame
        .symbol
        .map(|s| s.rsplit_once("+0x").map_or(s, |(name, _)| name))
        .filter(|s| !s.is_empty())
        .map(demangle);
    for (i, level) in levels.iter().enumerate() {
        let outermost = i + 1 == levels.len();
        let mut line = format!("{}#{} {}", frame.prefix, frame.number, frame.address);
        let function = match (&level.function, outermost) {
            (Some(function), _) => Some(function),
            (None, true) => dynamic_symbol.as_ref(),
            (None, false) => None,
        };
        if let Some(function) = function {
            line.push_str(" in ");
            line.push_str(function);
        }
        if let Some(file) = &level.file {
            line.push_str(" at ");
            line.push_str(file);
            if level.line != 0 {
                line.push_str(&format!(":{}", level.line));
            }
        }
        if outermost {
            line.push(' ');
            line.push_str(place.group);
            line.push_str(frame.rest);
        } else {
            line.push_str(" (inlined)");
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(if end.is_empty() && !outermost { b"\n" } else { end });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_the_three_forms_of_frame_line() {
        let frame =
            parse_frame("tally: guard:   #0 0x000055f1d2a011a9 in make_block+0x20 (/tmp/x/uaf+0x11a9)")
                .unwrap();
        assert_eq!(frame.prefix, "tally: guard:   ");
        assert_eq!(frame.number, "0");
        assert_eq!(frame.address, "0x000055f1d2a011a9");
        assert_eq!(frame.symbol, Some("make_block+0x20"));
        assert_eq!(
            frame.object,
            Some(ObjectPlace {
                path: "/tmp/x/uaf",
                address: 0x11a9,
                group: "(/tmp/x/uaf+0x11a9)"
            })
        );
        assert_eq!(frame.rest, "");

        let frame = parse_frame("tally: guard:   #12 0x000055f1d2a01200 (/tmp/x/uaf+0x1200)").unwrap();
        assert_eq!((frame.number, frame.symbol), ("12", None));
        assert_eq!(frame.object.unwrap().address, 0x1200);

        let frame = parse_frame("tally: guard:   #3 0x00007f0c1a000010").unwrap();
        assert_eq!(
            (frame.address, frame.symbol, frame.object),
            ("0x00007f0c1a000010", None, None)
        );
    }

    #[test]
    fn finds_frames_after_any_prefix_and_objects_with_spaces() {
        let frame = parse_frame(
            "2024-05-01T10:00:00Z app[7]: #2 0x7f0c1a02724a in __libc_start_call_main+0x7a \
             (/opt/my app/lib (x)/libc.so.6+0x2724a) [tail]",
        )
        .unwrap();
        assert_eq!(frame.prefix, "2024-05-01T10:00:00Z app[7]: ");
        assert_eq!(frame.symbol, Some("__libc_start_call_main+0x7a"));
        let place = frame.object.unwrap();
        assert_eq!(
            (place.path, place.address),
            ("/opt/my app/lib (x)/libc.so.6", 0x2724a)
        );
        assert_eq!(place.group, "(/opt/my app/lib (x)/libc.so.6+0x2724a)");
        assert_eq!(frame.rest, " [tail]");

        let frame = parse_frame("#1 0x10 in f+0x1 (/opt/my app/bin/a b+0x1f+0x2a)").unwrap();
        assert_eq!(frame.prefix, "");
        let place = frame.object.unwrap();
        assert_eq!((place.path, place.address), ("/opt/my app/bin/a b+0x1f", 0x2a));
        assert_eq!(frame.symbol, Some("f+0x1"));

        for not_a_frame in [
            "tally: guard: allocated by thread 4242:",
            "tally: guard: use-after-free: write at 0x7f0c1a2b3f08, 8 bytes into the 64-byte block",
            "issue#0 0x10",
            "#x 0x10",
            "#1 0xzz",
            "#1 0x10zz (/a+0x1)",
        ] {
            assert_eq!(parse_frame(not_a_frame), None, "{not_a_frame}");
        }
        // A group after other white space than a space or tab is not one (and no slice of the
        // line cuts a character).
        for odd in ["#1 0x10\u{a0}(/a+0x1)", "#1 0x10\u{2003}(/a (b)+0x1)"] {
            let frame = parse_frame(odd).unwrap();
            assert_eq!((frame.object, frame.symbol), (None, None), "{odd}");
        }
    }

    #[test]
    fn passes_lines_that_are_not_frames_through_byte_for_byte() {
        let report = b"tally: guard: double-free of the 64-byte block at 0x10\r\n\xff\xfe not UTF-8\n\
                       tally: guard:   #0 0x10\ntally: guard:   #1 0x20 (/nonexistent/tally-test/a+0x20)";
        let symbolized = symbolize_report(report, &[]);
        assert_eq!(symbolized.text, report);
        assert_eq!((symbolized.frames, symbolized.resolved), (2, 0));
        assert_eq!(symbolized.warnings.len(), 1, "{:?}", symbolized.warnings);
        assert!(
            symbolized.warnings[0].starts_with("cannot read /nonexistent/tally-test/a: "),
            "{:?}",
            symbolized.warnings
        );
    }

    #[test]
    fn writes_an_inline_chain_innermost_first_with_the_lines_end() {
        let frame = parse_frame("p: #4 0x1234 in outer+0x4 (/bin/x+0x1233) tail").unwrap();
        let levels = [
            Level {
                function: Some("inner".into()),
                file: Some("/s/x.c".into()),
                line: 7,
            },
            Level {
                function: None,
                file: Some("/s/x.c".into()),
                line: 0,
            },
        ];
        let mut out = Vec::new();
        write_levels(&frame, &levels, b"\r\n", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "p: #4 0x1234 in inner at /s/x.c:7 (inlined)\r\n\
             p: #4 0x1234 in outer at /s/x.c (/bin/x+0x1233) tail\r\n"
        );
        let mut out = Vec::new();
        write_levels(&frame, &levels, b"", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "p: #4 0x1234 in inner at /s/x.c:7 (inlined)\np: #4 0x1234 in outer at /s/x.c (/bin/x+0x1233) tail"
        );
    }

    #[test]
    fn any_line_of_report_like_pieces_parses_without_panicking() {
        const PIECES: [&str; 16] = [
            "#1", " ", "0x10", " in ", "f+0x2", " (", "/a b", "+0x", "1f", ")", "(", "\u{a0}", "é", "\t",
            "\r", "\n",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let mut line = String::new();
            for _ in 0..(state % 12) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                line.push_str(PIECES[(state % PIECES.len() as u64) as usize]);
            }
            if let Some(frame) = parse_frame(line.lines().next().unwrap_or("")) {
                assert!(frame.address.starts_with("0x"), "{line:?}");
            }
            let symbolized = symbolize_report(line.as_bytes(), &[]);
            assert_eq!(
                symbolized.text,
                line.as_bytes(),
                "nothing here resolves: {line:?}"
            );
        }
    }
}
