//! Options: one table ([`TABLE`]) is the source of truth for every option's name, default and
//! meaning; `docs/options.md` is checked against it by a test.
//!
//! Options come from `MALLOC_CONF` (for people coming from jemalloc) and then `TALLY_CONF`, so
//! `TALLY_CONF` wins on a key set in both. The syntax is jemalloc's: `key:value` pairs separated
//! by commas. Parsing never allocates. A bad pair is reported on one line,
//! `tally: TALLY_CONF: <what is wrong> in "<the text>"`, and skipped (the default stays), unless
//! `abort_conf:true`, which makes any such error abort once all options are read.

use core::fmt::Write;

use crate::arena::MAX_ARENAS;
use crate::pal::LineBuf;

/// What kind of value an option takes.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A decimal integer in `min..=max`.
    Unsigned {
        /// Smallest value allowed.
        min: u64,
        /// Largest value allowed.
        max: u64,
    },
}

/// One option's description.
pub struct OptionSpec {
    /// The key, as written in `TALLY_CONF`.
    pub name: &'static str,
    /// The value it takes.
    pub kind: Kind,
    /// The default, as written in `TALLY_CONF`.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// Every option Tally understands.
pub static TABLE: &[OptionSpec] = &[
    OptionSpec {
        name: "narenas",
        kind: Kind::Unsigned {
            min: 0,
            max: MAX_ARENAS as u64,
        },
        default: "0",
        doc: "Number of arenas threads are spread over; 0 means four per CPU.",
    },
    OptionSpec {
        name: "tcache",
        kind: Kind::Bool,
        default: "true",
        doc: "Per-thread caches of blocks up to 32 KiB. Off, every malloc and free takes an arena lock.",
    },
    OptionSpec {
        name: "stats_print",
        kind: Kind::Bool,
        default: "false",
        doc: "Print allocator statistics to stderr at exit (a line starting `tally: stats:`).",
    },
    OptionSpec {
        name: "abort_conf",
        kind: Kind::Bool,
        default: "false",
        doc:
            "Abort the process if TALLY_CONF or MALLOC_CONF has an error, instead of going on with defaults.",
    },
];

/// The parsed options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// See [`TABLE`].
    pub narenas: usize,
    /// See [`TABLE`].
    pub tcache: bool,
    /// See [`TABLE`].
    pub stats_print: bool,
    /// See [`TABLE`].
    pub abort_conf: bool,
}

impl Options {
    /// The defaults (they agree with [`TABLE`]; a test checks it).
    pub const DEFAULT: Options = Options {
        narenas: 0,
        tcache: true,
        stats_print: false,
        abort_conf: false,
    };

    fn set(&mut self, name: &str, value: u64) {
        match name {
            "narenas" => self.narenas = value as usize,
            "tcache" => self.tcache = value != 0,
            "stats_print" => self.stats_print = value != 0,
            "abort_conf" => self.abort_conf = value != 0,
            _ => {}
        }
    }
}

/// Parses `text` (the value of the variable `var`) into `opts`. Each error is formatted as one
/// line and passed to `on_error`. Returns the number of errors.
pub fn parse(var: &str, text: &[u8], opts: &mut Options, on_error: &mut dyn FnMut(&[u8])) -> usize {
    let mut errors = 0;
    let mut fail = |what: core::fmt::Arguments<'_>| {
        let mut line = LineBuf::new();
        let _ = write!(line, "tally: {var}: {what} in \"");
        write_escaped(&mut line, text, 160);
        let _ = line.write_str("\"\n");
        on_error(line.as_bytes());
        errors += 1;
    };
    if text.is_empty() {
        fail(format_args!("empty option string"));
        return errors;
    }
    for pair in text.split(|&b| b == b',') {
        if pair.is_empty() {
            fail(format_args!("empty option"));
            continue;
        }
        let Some(colon) = pair.iter().position(|&b| b == b':') else {
            fail(format_args!("missing ':' after \"{}\"", Escaped(pair)));
            continue;
        };
        let (key, value) = (&pair[..colon], &pair[colon + 1..]);
        let Some(spec) = TABLE.iter().find(|s| s.name.as_bytes() == key) else {
            fail(format_args!("unknown option \"{}\"", Escaped(key)));
            continue;
        };
        match parse_value(spec.kind, value) {
            Ok(v) => opts.set(spec.name, v),
            Err(why) => fail(format_args!("{} for {}: \"{}\"", why, spec.name, Escaped(value))),
        }
    }
    errors
}

fn parse_value(kind: Kind, value: &[u8]) -> Result<u64, &'static str> {
    match kind {
        Kind::Bool => match value {
            b"true" => Ok(1),
            b"false" => Ok(0),
            _ => Err("expected true or false"),
        },
        Kind::Unsigned { min, max } => {
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err("expected a whole number");
            }
            let mut n: u64 = 0;
            for &d in value {
                n = match n.checked_mul(10).and_then(|n| n.checked_add((d - b'0') as u64)) {
                    Some(n) => n,
                    None => return Err("number out of range"),
                };
            }
            if n < min || n > max {
                return Err("number out of range");
            }
            Ok(n)
        }
    }
}

/// Bytes shown with non-printable ones as `\xNN`, cut short at 40 bytes.
struct Escaped<'a>(&'a [u8]);

impl core::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write_escaped(f, self.0, 40);
        Ok(())
    }
}

fn write_escaped(out: &mut dyn Write, bytes: &[u8], limit: usize) {
    for &b in bytes.iter().take(limit) {
        let _ = if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.write_char(b as char)
        } else {
            write!(out, "\\x{b:02x}")
        };
    }
    if bytes.len() > limit {
        let _ = out.write_str("...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &[u8]) -> (Options, std::vec::Vec<std::string::String>) {
        let mut opts = Options::DEFAULT;
        let mut lines = std::vec::Vec::new();
        parse("TALLY_CONF", text, &mut opts, &mut |l| {
            lines.push(std::string::String::from_utf8(l.to_vec()).unwrap())
        });
        (opts, lines)
    }

    #[test]
    fn defaults_agree_with_the_table() {
        let mut text = std::string::String::new();
        for spec in TABLE {
            text.push_str(&format!("{}:{},", spec.name, spec.default));
        }
        text.pop();
        let (opts, errors) = run(text.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(opts, Options::DEFAULT);
    }

    #[test]
    fn good_options_are_taken() {
        let (opts, errors) = run(b"narenas:3,tcache:false,stats_print:true");
        assert!(errors.is_empty());
        assert_eq!(opts.narenas, 3);
        assert!(!opts.tcache && opts.stats_print);
    }

    #[test]
    fn bad_options_give_one_line_each_and_keep_defaults() {
        let long = "x".repeat(10 * 1024);
        let cases: &[&[u8]] = &[
            b"",
            b"prof",
            b"narenas:-1",
            b"narenas:1e99",
            b"narenas:99999999999999999999999",
            b"narenas:",
            b"narenas:257",
            b"tcache:yes",
            b"tcache:TRUE",
            b":true",
            b",",
            b"unknown:1",
            "narenas:\u{663}".as_bytes(),
            "ñ:1".as_bytes(),
            b"\xff\xfe:1",
            b"stats_print:true:false",
            long.as_bytes(),
            b"narenas:0x10",
            b"narenas: 4",
            b"narenas:4 ",
        ];
        for case in cases {
            let (opts, errors) = run(case);
            assert!(
                !errors.is_empty(),
                "no error for {:?}",
                std::string::String::from_utf8_lossy(case)
            );
            for e in &errors {
                assert!(
                    e.starts_with("tally: TALLY_CONF: ") && e.ends_with("\"\n"),
                    "{e:?}"
                );
                assert_eq!(e.matches('\n').count(), 1, "{e:?}");
                assert!(e.len() < 512);
            }
            assert_eq!(opts.narenas, 0);
            assert!(opts.tcache);
        }
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let (opts, errors) = run(b"narenas:2,narenas:5");
        assert!(errors.is_empty());
        assert_eq!(opts.narenas, 5);
    }
}
