//! The `heap_v2` parser (feature `std`): a whole dump in memory to a [`Profile`].
//!
//! It accepts what Tally's [`crate::write::Writer`] writes and what jemalloc 5 writes (per-thread
//! lines with thread names, `0` frames written without `0x`, a missing `MAPPED_LIBRARIES:`
//! section when `/proc` could not be read), and refuses everything else with the line number and
//! what is wrong. It never panics, whatever the bytes (a property test feeds it random and
//! mutated input).
//!
//! Where jeprof is more lenient — it skips lines it does not recognise, and gets confused
//! silently (a `t*:` line after an `@` line it could not read is added to the stack before) —
//! this parser stops with an error, because a report from a half-read file is worse than none.

use std::fmt;
use std::format;
use std::string::String;
use std::vec::Vec;

use crate::estimate::{Counts, Estimate};

/// A parsed dump.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Mean sampling period in bytes, from `heap_v2/<period>`.
    pub period: u64,
    /// The `t*:` line after the header: live and cumulative totals as written (jeprof ignores it).
    pub totals: Line,
    /// Per-thread summary lines after the totals.
    pub threads: Vec<ThreadLine>,
    /// The stacks, in file order.
    pub stacks: Vec<Stack>,
    /// The memory map, one entry per `/proc/<pid>/maps` line; empty without a map section.
    pub maps: Vec<Mapping>,
    /// The map section verbatim, `None` when the dump has no `MAPPED_LIBRARIES:` line.
    pub maps_text: Option<String>,
}

/// A `t…:` line's two pairs, as written (before unbiasing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Line {
    /// Live objects and bytes (`<n>: <s>`).
    pub live: Counts,
    /// Cumulative objects and bytes (`[<n>: <s>]`, `0: 0` without `prof_accum`).
    pub accum: Counts,
}

/// A `t<id>:` line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadLine {
    /// The thread id jemalloc (or Tally) gave the thread.
    pub id: u64,
    /// The counts.
    pub counts: Line,
    /// The thread name after the counts, if any (header lines only).
    pub name: Option<String>,
}

/// One `@` block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stack {
    /// Frame addresses, innermost first, as written: return addresses for all frames but the
    /// first (jeprof subtracts 1 from those before symbolizing; so should a reader).
    pub frames: Vec<u64>,
    /// Live objects and bytes as written.
    pub live: Counts,
    /// Cumulative objects and bytes as written.
    pub accum: Counts,
    /// The stack's per-thread lines.
    pub threads: Vec<ThreadLine>,
}

impl Stack {
    /// Live estimate as jeprof computes it from this dump's numbers.
    pub fn live_estimate(&self, period: u64) -> Estimate {
        self.live.jeprof_estimate(period)
    }
    /// Cumulative estimate as jeprof computes it.
    pub fn accum_estimate(&self, period: u64) -> Estimate {
        self.accum.jeprof_estimate(period)
    }
}

/// One line of `/proc/<pid>/maps`: `start-end perms offset dev inode [path]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Four characters such as `r-xp`.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Device, `major:minor` in hex.
    pub dev: String,
    /// Inode, 0 for anonymous mappings.
    pub inode: u64,
    /// The path or pseudo-path (`[heap]`, `[stack]`, `/x (deleted)`), empty for anonymous ones.
    pub path: String,
}

impl Mapping {
    /// Whether the mapping is executable (the only ones jeprof symbolizes from).
    pub fn is_executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }
    /// Whether `addr` falls inside.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

impl Profile {
    /// The mapping that holds `addr`, if any.
    pub fn mapping_for(&self, addr: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| m.contains(addr))
    }
    /// Sum over stacks of the live estimates jeprof computes (what `jeprof --text` totals).
    pub fn live_estimate(&self) -> Estimate {
        let mut sum = Estimate::ZERO;
        for s in &self.stacks {
            sum.add(s.live_estimate(self.period));
        }
        sum
    }
}

/// What is wrong and on which line (1-based). Displays as `LINE: message`; a caller with a file
/// name prints `{file}:{error}`, giving `FILE:LINE: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// Shows at most 60 bytes of a line in an error message.
fn excerpt(line: &[u8]) -> String {
    let cut = &line[..line.len().min(60)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if line.len() > 60 {
        s.push('…');
    }
    s
}

/// Parses a whole dump.
pub fn parse(input: &[u8]) -> Result<Profile, ParseError> {
    let mut lines = input.split(|&b| b == b'\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        (i + 1, l)
    });
    // A final '\n' leaves one empty piece after it; it is not a line.
    let total_pieces = input.split(|&b| b == b'\n').count();
    let ends_with_newline = input.last() == Some(&b'\n');
    let last_line = if ends_with_newline {
        total_pieces - 1
    } else {
        total_pieces
    };

    let mut profile = Profile::default();
    let (n, header) = match lines.next() {
        Some((n, l)) if !(n == 1 && input.is_empty()) => (n, l),
        _ => return err(1, "empty file: expected `heap_v2/<period>`"),
    };
    let Some(period) = header.strip_prefix(b"heap_v2/") else {
        return err(
            n,
            format!("expected `heap_v2/<period>`, found `{}`", excerpt(header)),
        );
    };
    profile.period = parse_decimal(trim(period)).ok_or_else(|| ParseError {
        line: n,
        message: format!("bad sampling period `{}` in the header", excerpt(period)),
    })?;

    let mut saw_totals = false;
    // Whether the last non-blank line was an `@` line, which must be followed by its `t*:`.
    let mut stack_wants_totals: Option<usize> = None;
    while let Some((n, line)) = lines.next() {
        if n > last_line {
            break;
        }
        let t = trim(line);
        if t.is_empty() {
            continue;
        }
        if t == b"MAPPED_LIBRARIES:" || t.starts_with(b"--- Memory map:") {
            if let Some(at) = stack_wants_totals {
                return err(at, "stack without a `t*:` line");
            }
            // After the line's end: its `\r`, if any (stripped from `line`), and `\n`.
            let end = offset_of(input, line) + line.len();
            let start = end + usize::from(input.get(end) == Some(&b'\r')) + 1;
            let text = input.get(start..).unwrap_or(b"");
            profile.maps_text = Some(String::from_utf8_lossy(text).into_owned());
            for (n, line) in lines.by_ref() {
                if n > last_line {
                    break;
                }
                if trim(line).is_empty() {
                    continue;
                }
                profile.maps.push(parse_mapping(n, line)?);
            }
            break;
        }
        if let Some(rest) = t.strip_prefix(b"@") {
            if !saw_totals {
                return err(n, "stack before the totals line `t*:`");
            }
            if let Some(at) = stack_wants_totals {
                return err(at, "stack without a `t*:` line");
            }
            if !rest.is_empty() && !rest[0].is_ascii_whitespace() {
                return err(n, format!("expected `@ <address> ...`, found `{}`", excerpt(t)));
            }
            let mut frames = Vec::new();
            for word in rest.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
                let digits = word
                    .strip_prefix(b"0x")
                    .or_else(|| word.strip_prefix(b"0X"))
                    .unwrap_or(word);
                match parse_hex(digits) {
                    Some(a) => frames.push(a),
                    None => return err(n, format!("bad frame address `{}`", excerpt(word))),
                }
            }
            profile.stacks.push(Stack {
                frames,
                ..Stack::default()
            });
            stack_wants_totals = Some(n);
            continue;
        }
        if t.first() == Some(&b't') {
            let (thread, counts, name) = parse_counts_line(n, t)?;
            match (thread, profile.stacks.last_mut()) {
                (None, None) if !saw_totals => {
                    profile.totals = counts;
                    saw_totals = true;
                }
                (None, Some(stack)) if stack_wants_totals.is_some() => {
                    stack.live = counts.live;
                    stack.accum = counts.accum;
                    stack_wants_totals = None;
                }
                (None, _) => return err(n, "a second `t*:` line for the same block"),
                (Some(_), _) if !saw_totals => return err(n, "thread line before the totals line `t*:`"),
                (Some(_), _) if stack_wants_totals.is_some() => {
                    return err(n, "thread line before the stack's `t*:` line")
                }
                (Some(id), None) => profile.threads.push(ThreadLine { id, counts, name }),
                (Some(id), Some(stack)) => stack.threads.push(ThreadLine { id, counts, name }),
            }
            continue;
        }
        return err(n, format!("unexpected line `{}`", excerpt(t)));
    }
    if let Some(at) = stack_wants_totals {
        return err(at, "stack without a `t*:` line (the file ends)");
    }
    if !saw_totals {
        return err(last_line.max(1), "no totals line `t*:` (the file ends)");
    }
    Ok(profile)
}

/// Byte offset of `part` (a sub-slice of `whole`) in `whole`.
fn offset_of(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = (b as char).to_digit(16)?;
        v = v.checked_mul(16)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// A cursor over one line for the `t…:` grammar.
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn skip_spaces(&mut self) -> bool {
        let start = self.at;
        while self.s.get(self.at).is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
        self.at > start
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn digits(&mut self) -> Option<u64> {
        let start = self.at;
        while self.s.get(self.at).is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        parse_decimal(&self.s[start..self.at])
    }
    fn rest(&self) -> &'a [u8] {
        &self.s[self.at.min(self.s.len())..]
    }
}

/// `t*: <n>: <s> [<n>: <s>]` or `t<id>: ... [ name]` (already trimmed). Returns the thread id
/// (`None` for `*`), the counts and the name.
fn parse_counts_line(n: usize, t: &[u8]) -> Result<(Option<u64>, Line, Option<String>), ParseError> {
    let bad = |what: &str| {
        err(
            n,
            format!(
                "expected `t<id|*>: <objects>: <bytes> [<objects>: <bytes>]` ({what}), found `{}`",
                excerpt(t)
            ),
        )
    };
    let mut c = Cursor { s: t, at: 1 };
    let thread = if c.eat(b'*') {
        None
    } else {
        match c.digits() {
            Some(id) => Some(id),
            None => return bad("thread id"),
        }
    };
    let pair = |c: &mut Cursor<'_>| -> Option<Counts> {
        let objects = c.digits()?;
        if !c.eat(b':') || !c.skip_spaces() {
            return None;
        }
        let bytes = c.digits()?;
        Some(Counts { objects, bytes })
    };
    if !c.eat(b':') || !c.skip_spaces() {
        return bad("`:` after the thread");
    }
    let Some(live) = pair(&mut c) else {
        return bad("live pair");
    };
    c.skip_spaces();
    if !c.eat(b'[') {
        return bad("`[`");
    }
    c.skip_spaces();
    let Some(accum) = pair(&mut c) else {
        return bad("cumulative pair");
    };
    if !c.eat(b']') {
        return bad("`]`");
    }
    let rest = c.rest();
    let name = if rest.is_empty() {
        None
    } else if rest[0].is_ascii_whitespace() && thread.is_some() {
        Some(String::from_utf8_lossy(trim(rest)).into_owned())
    } else {
        return bad("text after `]`");
    };
    Ok((thread, Line { live, accum }, name))
}

/// `start-end perms offset dev inode [path]`.
fn parse_mapping(n: usize, line: &[u8]) -> Result<Mapping, ParseError> {
    let bad = |what: &str| err(n, format!("bad memory map line ({what}): `{}`", excerpt(line)));
    let mut rest = trim(line);
    let mut field = || -> &[u8] {
        let end = rest
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = trim(r);
        f
    };
    let range = field();
    let perms = field();
    let offset = field();
    let dev = field();
    let inode = field();
    let path = rest;
    let Some(dash) = range.iter().position(|&b| b == b'-') else {
        return bad("address range");
    };
    let (Some(start), Some(end)) = (parse_hex(&range[..dash]), parse_hex(&range[dash + 1..])) else {
        return bad("address range");
    };
    if perms.len() != 4 {
        return bad("permissions");
    }
    let Some(offset) = parse_hex(offset) else {
        return bad("offset");
    };
    if dev.is_empty() {
        return bad("device");
    }
    let Some(inode) = parse_decimal(inode) else {
        return bad("inode");
    };
    Ok(Mapping {
        start,
        end,
        perms: String::from_utf8_lossy(perms).into_owned(),
        offset,
        dev: String::from_utf8_lossy(dev).into_owned(),
        inode,
        path: String::from_utf8_lossy(path).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn errors_name_the_line() {
        let e = parse(b"heap_v2/8\n  t*: 1: 2 [0: 0]\n@ 0x10 zz\n").unwrap_err();
        assert_eq!(e.to_string(), "3: bad frame address `zz`");
        let e = parse(b"heap_v2/8\n  t*: 1: 2 [0: 0]\n@ 0x10\n\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse(b"").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse(b"heap_v2/8\n  t*: 1: 2 [0: 0\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse(b"heap_v2/x\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse(b"heap_v2/8\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        let e = parse(b"heap_v2/8\n  t*: 99999999999999999999999: 2 [0: 0]\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse(b"heap_v2/8\n  t*: 1: 2 [0: 0]\n\nMAPPED_LIBRARIES:\nnot a map\n").unwrap_err();
        assert_eq!(e.line, 5);
    }

    #[test]
    fn jemalloc_quirks_are_accepted() {
        let p = parse(
            b"heap_v2/1024\r\n  t*: 1: 2 [0: 0]\n  t3: 1: 2 [0: 0] worker 1\n@ 0 0x10\n  t*: 1: 2 [0: 0]\n  t3: 1: 2 [0: 0]\n",
        )
        .unwrap();
        assert_eq!(p.period, 1024);
        assert_eq!(p.threads[0].name.as_deref(), Some("worker 1"));
        assert_eq!(p.stacks[0].frames, [0, 0x10]);
        assert_eq!(p.stacks[0].threads[0].id, 3);
        assert!(p.maps_text.is_none());
    }

    #[test]
    fn the_map_text_starts_after_a_crlf_line_end() {
        let p = parse(b"heap_v2/1\r\n  t*: 0: 0 [0: 0]\r\nMAPPED_LIBRARIES:\r\n00-10 r-xp 0 00:00 0 /a\r\n")
            .unwrap();
        assert_eq!(p.maps_text.as_deref(), Some("00-10 r-xp 0 00:00 0 /a\r\n"));
        assert_eq!(p.maps[0].path, "/a");
    }

    #[test]
    fn map_lines_with_spaces_in_paths() {
        let p = parse(
            b"heap_v2/1\n  t*: 0: 0 [0: 0]\n\nMAPPED_LIBRARIES:\n\
7f0000000000-7f0000001000 r-xp 00001000 fe:00 42    /tmp/a b (deleted)\n\
7ffc005db000-7ffc005fc000 rw-p 00000000 00:00 0                          [stack]\n\
7ffc00000000-7ffc00001000 rw-p 00000000 00:00 0\n",
        )
        .unwrap();
        assert_eq!(p.maps.len(), 3);
        assert_eq!(p.maps[0].path, "/tmp/a b (deleted)");
        assert!(p.maps[0].is_executable());
        assert_eq!(p.maps[0].offset, 0x1000);
        assert_eq!(p.maps[1].path, "[stack]");
        assert_eq!(p.maps[2].path, "");
        assert_eq!(p.mapping_for(0x7f0000000800).map(|m| m.inode), Some(42));
    }
}
