//! The parser on input it did not write: it never panics (random bytes, valid dumps cut, spliced
//! and mutated), every error names a line the input has, a valid dump parses to the numbers in
//! its text, a cut dump is refused or parses to what the whole dump begins with, and edits that
//! keep the text valid keep it parsing, to the edited numbers.
//!
//! "The numbers in its text" come from [`read_plainly`], a reader for well-formed dumps only,
//! written independently of the parser (whitespace splitting, no grammar), so that the two can
//! disagree.
#![cfg(feature = "std")]

use proptest::prelude::*;
use tally_format::parse::{Line, ThreadLine};
use tally_format::{parse, Counts, Mapping, ParseError, Profile, Stack};

const VALID: &[u8] = include_bytes!("data/jemalloc-5.3-ls.heap");

/// Lines in `input` as the parser numbers them: a final newline does not start another line,
/// and empty input has line 1.
fn line_count(input: &[u8]) -> usize {
    let newlines = input.iter().filter(|&&b| b == b'\n').count();
    if input.last() == Some(&b'\n') {
        newlines.max(1)
    } else {
        newlines + 1
    }
}

/// An error must point at a line of the input and say something.
fn check_error(input: &[u8], e: &ParseError) {
    assert!(
        (1..=line_count(input)).contains(&e.line),
        "error on line {} of a {}-line input: {e}",
        e.line,
        line_count(input)
    );
    assert!(
        !e.message.is_empty(),
        "an error without a message on line {}",
        e.line
    );
}

/// `t<id|*>: <n>: <s> [<n>: <s>][ name]`, well-formed, by splitting on whitespace.
fn read_counts(line: &str) -> (Option<u64>, Line, Option<String>) {
    let line = line.trim();
    let (id, rest) = line[1..].split_once(':').expect("`t…:`");
    let id = (id != "*").then(|| id.parse().expect("thread id"));
    let (pairs, name) = rest.split_once(']').expect("`]`");
    let numbers: Vec<u64> = pairs
        .split(|c: char| c.is_whitespace() || c == ':' || c == '[')
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().expect("a count"))
        .collect();
    assert_eq!(numbers.len(), 4, "{line}");
    let counts = Line {
        live: Counts {
            objects: numbers[0],
            bytes: numbers[1],
        },
        accum: Counts {
            objects: numbers[2],
            bytes: numbers[3],
        },
    };
    let name = (!name.is_empty()).then(|| name.trim().to_string());
    (id, counts, name)
}

/// `start-end perms offset dev inode [path]`, well-formed.
fn read_mapping(line: &str) -> Mapping {
    let mut rest = line.trim();
    let mut field = || {
        let (f, r) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        rest = r.trim();
        f
    };
    let (range, perms, offset, dev, inode) = (field(), field(), field(), field(), field());
    let (start, end) = range.split_once('-').expect("a range");
    let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex");
    Mapping {
        start: hex(start),
        end: hex(end),
        perms: perms.to_string(),
        offset: hex(offset),
        dev: dev.to_string(),
        inode: inode.parse().expect("inode"),
        path: rest.to_string(),
    }
}

/// What a well-formed dump says, read line by line without the parser.
fn read_plainly(text: &[u8]) -> Profile {
    let text = std::str::from_utf8(text).expect("a valid dump is ASCII");
    // Each line with its end, and the offset just past it.
    let mut lines = text.split_inclusive('\n').scan(0, |offset, raw| {
        *offset += raw.len();
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        Some((line.strip_suffix('\r').unwrap_or(line), *offset))
    });
    let (header, _) = lines.next().unwrap();
    let mut p = Profile {
        period: header["heap_v2/".len()..].trim().parse().expect("the period"),
        ..Profile::default()
    };
    let mut saw_totals = false;
    for (line, end) in lines.by_ref() {
        let t = line.trim();
        if t == "MAPPED_LIBRARIES:" {
            p.maps_text = Some(text[end..].to_string());
            break;
        }
        if let Some(frames) = t.strip_prefix('@') {
            let frames = frames
                .split_whitespace()
                .map(|f| {
                    let digits = f.strip_prefix("0x").or_else(|| f.strip_prefix("0X")).unwrap_or(f);
                    u64::from_str_radix(digits, 16).expect("a frame")
                })
                .collect();
            p.stacks.push(Stack {
                frames,
                ..Stack::default()
            });
        } else if t.starts_with('t') {
            match (read_counts(t), p.stacks.last_mut()) {
                ((None, counts, _), None) => {
                    assert!(!saw_totals);
                    p.totals = counts;
                    saw_totals = true;
                }
                ((None, counts, _), Some(stack)) => (stack.live, stack.accum) = (counts.live, counts.accum),
                ((Some(id), counts, name), None) => p.threads.push(ThreadLine { id, counts, name }),
                ((Some(id), counts, name), Some(stack)) => {
                    stack.threads.push(ThreadLine { id, counts, name })
                }
            }
        } else {
            assert!(t.is_empty(), "not a dump line: {t}");
        }
    }
    p.maps = lines
        .filter(|(l, _)| !l.trim().is_empty())
        .map(|(l, _)| read_mapping(l))
        .collect();
    p
}

/// The lines of [`VALID`], without their newlines.
fn valid_lines() -> Vec<String> {
    std::str::from_utf8(VALID)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Indexes (into [`valid_lines`]) of the `@` lines, and the line `MAPPED_LIBRARIES:`.
fn layout() -> (Vec<usize>, usize) {
    let lines = valid_lines();
    let stacks = (0..lines.len()).filter(|&i| lines[i].starts_with('@')).collect();
    let maps = lines.iter().position(|l| l == "MAPPED_LIBRARIES:").unwrap();
    (stacks, maps)
}

fn join(lines: &[String]) -> Vec<u8> {
    let mut text = lines.join("\n");
    text.push('\n');
    text.into_bytes()
}

#[test]
fn a_valid_dump_parses_to_the_numbers_in_its_text() {
    let p = parse(VALID).expect("the dump is valid");
    assert_eq!(p, read_plainly(VALID));
    // The plain reader read something: the numbers of this file, counted by hand.
    assert_eq!(p.period, 1024);
    assert_eq!(
        p.totals.live,
        Counts {
            objects: 81,
            bytes: 84163
        }
    );
    assert_eq!(p.threads.len(), 1);
    assert_eq!(p.stacks.len(), 16);
    assert!(p
        .stacks
        .iter()
        .all(|s| s.threads.len() == 1 && s.threads[0].counts.live == s.live));
    let bytes: u64 = p.stacks.iter().map(|s| s.live.bytes).sum();
    assert_eq!(
        bytes,
        2066 + 306 + 64 + 161 + 1008 + 1008 + 885 + 48 + 48 + 223 + 1937 + 646 + 1555 + 24576 + 1771 + 81920
    );
    assert_eq!(p.stacks[15].frames.len(), 8);
    assert_eq!(p.stacks[15].frames[7], 0x7f439e557ba0);
    let map_lines = VALID
        .split(|&b| b == b'\n')
        .skip(53)
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(p.maps.len(), map_lines);
    assert_eq!(p.maps[0].start, 0x55da872e2000);
    assert_eq!(p.maps[0].path, "/usr/bin/ls");
    assert_eq!(p.maps[5].path, "", "an anonymous mapping");
}

/// `got`, a thread line from a cut dump, is `want` cut: same id and counts, a shorter name.
fn check_thread_prefix(got: &ThreadLine, want: &ThreadLine) {
    assert_eq!((got.id, got.counts), (want.id, want.counts));
    let (got, want) = (
        got.name.as_deref().unwrap_or(""),
        want.name.as_deref().unwrap_or(""),
    );
    assert!(want.starts_with(got), "name {got:?} is not a start of {want:?}");
}

/// `got` (the parse of a cut dump) holds a beginning of `whole`: everything up to its last
/// item equal, the last one cut short at most.
fn check_prefix_of(got: &Profile, whole: &Profile) {
    assert_eq!(got.period, whole.period);
    assert_eq!(got.totals, whole.totals);
    assert!(got.threads.len() <= whole.threads.len());
    if let Some((last, rest)) = got.threads.split_last() {
        assert_eq!(rest, &whole.threads[..rest.len()]);
        if got.stacks.is_empty() {
            check_thread_prefix(last, &whole.threads[rest.len()]);
        } else {
            assert_eq!(last, &whole.threads[rest.len()]);
        }
    }
    assert!(got.stacks.len() <= whole.stacks.len());
    if let Some((last, rest)) = got.stacks.split_last() {
        assert_eq!(rest, &whole.stacks[..rest.len()]);
        let want = &whole.stacks[rest.len()];
        assert_eq!(
            (&last.frames, last.live, last.accum),
            (&want.frames, want.live, want.accum)
        );
        assert!(last.threads.len() <= want.threads.len());
        if let Some((t, ts)) = last.threads.split_last() {
            assert_eq!(ts, &want.threads[..ts.len()]);
            check_thread_prefix(t, &want.threads[ts.len()]);
        }
    }
    let Some(maps_text) = &got.maps_text else {
        assert!(got.maps.is_empty());
        return;
    };
    // The map section begun: every stack was read whole.
    assert_eq!((&got.threads, &got.stacks), (&whole.threads, &whole.stacks));
    assert!(whole.maps_text.as_ref().unwrap().starts_with(maps_text.as_str()));
    assert!(got.maps.len() <= whole.maps.len());
    if let Some((last, rest)) = got.maps.split_last() {
        assert_eq!(rest, &whole.maps[..rest.len()]);
        let want = &whole.maps[rest.len()];
        // Only the last fields can be cut and still read: the inode's digits, the path.
        assert_eq!(
            (last.start, last.end, &last.perms, last.offset, &last.dev),
            (want.start, want.end, &want.perms, want.offset, &want.dev)
        );
        assert!(
            want.inode.to_string().starts_with(&last.inode.to_string()),
            "{last:?} vs {want:?}"
        );
        assert!(want.path.starts_with(&last.path), "{last:?} vs {want:?}");
    }
}

#[test]
fn every_prefix_of_a_valid_dump_is_refused_with_a_line_or_read_as_a_beginning() {
    let whole = parse(VALID).unwrap();
    let (mut refused, mut read) = (0, 0);
    for cut in 0..=VALID.len() {
        let prefix = &VALID[..cut];
        match parse(prefix) {
            Err(e) => {
                check_error(prefix, &e);
                refused += 1;
            }
            Ok(p) => {
                check_prefix_of(&p, &whole);
                read += 1;
            }
        }
    }
    // Both outcomes happen: a cut inside a `t*:` line is an error, a cut at a line end is not.
    assert!(refused > 0 && read > 0, "{refused} refused, {read} read");
    // Cuts at the end of a stack block read exactly the stacks before it.
    let (stacks, maps) = layout();
    let lines = valid_lines();
    for (k, &at) in stacks.iter().enumerate() {
        let p = parse(&join(&lines[..at])).unwrap();
        assert_eq!(p.stacks, whole.stacks[..k]);
    }
    let p = parse(&join(&lines[..maps])).unwrap();
    assert_eq!((p.stacks.len(), p.maps_text), (whole.stacks.len(), None));
}

/// An edit that keeps the dump valid.
#[derive(Clone, Debug)]
enum Edit {
    /// New counts for stack `.0`'s `t*:` line.
    Counts(usize, [u64; 4]),
    /// New address for frame `.1` of stack `.0`, written in style `.3` (`0x`, `0X`, bare).
    Frame(usize, usize, u64, u8),
    /// A name after stack `.0`'s thread line.
    ThreadName(usize, String),
    /// Spaces and tabs around line `.0` of the stack section, and `.1` blank lines after it.
    Spacing(usize, String, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..16usize, any::<[u64; 4]>()).prop_map(|(s, c)| Edit::Counts(s, c)),
        (0..16usize, 0..8usize, any::<u64>(), 0..3u8).prop_map(|(s, f, a, st)| Edit::Frame(s, f, a, st)),
        (0..16usize, "[a-z][a-z0-9 ]{0,12}").prop_map(|(s, n)| Edit::ThreadName(s, n)),
        (1..52usize, "[ \t]{0,3}", 0..3usize).prop_map(|(l, w, b)| Edit::Spacing(l, w, b)),
    ]
}

/// Applies `edits` to the lines of [`VALID`]; returns the text and the profile the edits should
/// give, made from `whole` (the parse of the unedited dump).
fn apply(edits: &[Edit], whole: &Profile) -> (Vec<u8>, Profile) {
    let (stacks, _) = layout();
    let mut lines = valid_lines();
    let mut want = whole.clone();
    let mut blank_after = vec![0usize; lines.len()];
    for e in edits {
        match e {
            Edit::Counts(s, [a, b, c, d]) => {
                lines[stacks[*s] + 1] = format!("  t*: {a}: {b} [{c}: {d}]");
                want.stacks[*s].live = Counts {
                    objects: *a,
                    bytes: *b,
                };
                want.stacks[*s].accum = Counts {
                    objects: *c,
                    bytes: *d,
                };
            }
            Edit::Frame(s, f, addr, style) => {
                let frames = &mut want.stacks[*s].frames;
                let f = f % frames.len();
                frames[f] = *addr;
                let words: Vec<String> = frames
                    .iter()
                    .enumerate()
                    .map(|(i, a)| match (i == f, style) {
                        (true, 0) => format!("0x{a:x}"),
                        (true, 1) => format!("0X{a:X}"),
                        (true, _) => format!("{a:x}"),
                        (false, _) => format!("0x{a:x}"),
                    })
                    .collect();
                lines[stacks[*s]] = format!("@ {}", words.join(" "));
            }
            Edit::ThreadName(s, name) => {
                let line = &mut lines[stacks[*s] + 2];
                let end = line.find(']').unwrap();
                line.truncate(end + 1);
                line.push(' ');
                line.push_str(name);
                let want_name = name.trim();
                want.stacks[*s].threads[0].name = Some(want_name.to_string());
            }
            Edit::Spacing(l, space, blanks) => {
                let line = &mut lines[*l];
                *line = format!("{space}{}{space}", line.trim());
                blank_after[*l] += blanks;
            }
        }
    }
    let mut text = String::new();
    for (line, blanks) in lines.iter().zip(blank_after) {
        text.push_str(line);
        text.push('\n');
        text.push_str(&"\n".repeat(blanks));
    }
    (text.into_bytes(), want)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse(&bytes) {
            check_error(&bytes, &e);
        }
    }

    #[test]
    fn random_lines_from_the_grammar(lines in proptest::collection::vec(
        prop_oneof![
            Just("heap_v2/524288".to_string()),
            Just("  t*: 1: 2 [3: 4]".to_string()),
            Just("  t7: 1: 2 [3: 4] name".to_string()),
            Just("@ 0x1 0x2".to_string()),
            Just("@".to_string()),
            Just(String::new()),
            Just("MAPPED_LIBRARIES:".to_string()),
            Just("00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon".to_string()),
            "[ -~]{0,40}",
        ],
        0..30,
    )) {
        let text = lines.join("\n");
        if let Err(e) = parse(text.as_bytes()) {
            check_error(text.as_bytes(), &e);
        }
    }

    #[test]
    fn mutated_valid_dump(
        cut in 0..VALID.len(),
        edits in proptest::collection::vec((0..VALID.len(), any::<u8>()), 0..8),
    ) {
        let mut bytes = VALID.to_vec();
        for (at, b) in edits {
            bytes[at] = b;
        }
        for input in [&bytes[..], &bytes[..cut], &bytes[cut..]] {
            if let Err(e) = parse(input) {
                check_error(input, &e);
            }
        }
    }

    #[test]
    fn edits_that_keep_the_dump_valid_keep_it_parsing(
        edits in proptest::collection::vec(edit(), 1..6),
        crlf in any::<bool>(),
    ) {
        let whole = parse(VALID).unwrap();
        let (mut text, mut want) = apply(&edits, &whole);
        if crlf {
            text = String::from_utf8(text).unwrap().replace('\n', "\r\n").into_bytes();
        }
        let got = parse(&text).map_err(|e| TestCaseError::fail(format!("{e} after {edits:?}")))?;
        // The map section is kept verbatim; the edits leave it alone but for the line ends.
        want.maps_text = whole.maps_text.map(|t| if crlf { t.replace('\n', "\r\n") } else { t });
        // Compared in parts, so that a failure shows the part that differs.
        prop_assert_eq!(&got.maps_text, &want.maps_text, "after {:?}", edits);
        prop_assert_eq!(&got.stacks, &want.stacks, "after {:?}", edits);
        prop_assert_eq!(&got, &want, "after {:?}", edits);
        prop_assert_eq!(&got, &read_plainly(&text));
    }
}
