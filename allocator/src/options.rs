//! Options: one table ([`TABLE`]) is the source of truth for every option's name, default and
//! meaning; `docs/options.md` is checked against it by a test.
//!
//! Options come from `MALLOC_CONF` (for people coming from jemalloc) and then `TALLY_CONF`, so
//! `TALLY_CONF` wins on a key set in both. The syntax is jemalloc's: `key:value` pairs separated
//! by commas. Parsing never allocates. A bad pair is reported on one line,
//! `tally: TALLY_CONF: <what is wrong> in "<the text>"`, and skipped (the default stays), unless
//! `abort_conf:true`, which makes any such error abort once all options are read. After
//! [`MAX_ERRORS_SHOWN`] such lines one more counts the rest, so a runaway setting (a script that
//! wrote 120,000 commas) cannot flood stderr.

use core::fmt::Write;

use tally_pal::LineBuf;

/// What kind of value an option takes.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A decimal integer in `min..=max` (a leading `-` allowed when `min` is negative).
    Integer {
        /// Smallest value allowed.
        min: i64,
        /// Largest value allowed.
        max: i64,
    },
    /// One of a few words; the value is the word's index.
    Choice(&'static [&'static str]),
    /// Zero or more of the given flag characters, each at most once; the value is a bit set
    /// (bit `i` for the `i`-th character).
    Flags(&'static str),
    /// Text of at most [`TEXT_MAX`] bytes, without commas.
    Text,
    /// A listening address, `HOST:PORT` (see [`host_and_port`]), kept as text.
    Address,
    /// A signal a program can be sent to ask for something (see [`is_request_signal`]), by
    /// number or name (`12`, `SIGUSR2`, `USR2`, `SIGRTMIN+3`); `0` for none.
    Signal,
}

/// Most arenas Tally makes (the bound of `narenas`).
pub const MAX_ARENAS: usize = 256;

/// Longest text value (`prof_prefix`).
pub const TEXT_MAX: usize = 255;

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

/// Flag characters of `stats_print_opts`.
pub const STATS_FLAGS: &str = "Jab";
/// `stats_print_opts` bit: print JSON instead of text.
pub const STATS_JSON: u32 = 1;
/// `stats_print_opts` bit: leave out the per-arena table.
pub const STATS_NO_ARENAS: u32 = 2;
/// `stats_print_opts` bit: leave out the per-size-class table.
pub const STATS_NO_BINS: u32 = 4;

/// Most option errors printed; the rest are counted in one last line.
pub const MAX_ERRORS_SHOWN: usize = 10;

/// Whether `sig` is a signal meant to be sent to a program to ask it for something, so that a
/// handler that only notes the request and returns leaves the program as it was: `SIGHUP`,
/// `SIGUSR1`, `SIGUSR2`, and the real-time signals the C library leaves to applications. Not the
/// signals a fault raises (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`, `SIGSYS`: the
/// faulting instruction would run again forever once the handler returns), `SIGABRT`, those
/// that cannot be caught (`SIGKILL`, `SIGSTOP`), nor those with a meaning of their own to the
/// program or its shell (`SIGINT`, `SIGTERM`, `SIGQUIT`, `SIGCHLD`, `SIGPIPE`, `SIGALRM`,
/// job control, ...).
pub fn is_request_signal(sig: i32) -> bool {
    let (rt_min, rt_max) = tally_pal::process::realtime_signals();
    matches!(sig, libc::SIGHUP | libc::SIGUSR1 | libc::SIGUSR2) || (rt_min..=rt_max).contains(&sig)
}

/// Values of `junk`.
pub const JUNK_CHOICES: &[&str] = &["false", "true", "alloc", "free"];

/// Values of `thp`, in the order of [`Thp`].
pub const THP_CHOICES: &[&str] = &["auto", "default", "always", "never"];

/// What Tally asks of the kernel's transparent huge pages (`thp`), for the memory it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Thp {
    /// Tally's default: no huge pages for the arenas' chunks (whose pages are handed out and
    /// given back one by one) nor for its own tables; huge blocks as the system's policy says.
    Auto = 0,
    /// jemalloc's `default`: no advice at all, the system's policy everywhere.
    Default = 1,
    /// jemalloc's `always`: huge pages wanted (`MADV_HUGEPAGE`) for chunks and huge blocks.
    Always = 2,
    /// jemalloc's `never`: huge pages refused (`MADV_NOHUGEPAGE`) for chunks and huge blocks.
    Never = 3,
}

impl Thp {
    /// The mode of index `i` of [`THP_CHOICES`] (anything else: [`Thp::Auto`]).
    pub const fn from_index(i: u8) -> Thp {
        match i {
            1 => Thp::Default,
            2 => Thp::Always,
            3 => Thp::Never,
            _ => Thp::Auto,
        }
    }

    /// Its word in `thp` (and in `mallctl("opt.thp")`).
    pub const fn word(self) -> &'static str {
        THP_CHOICES[self as usize]
    }
}

/// Every option Tally understands.
pub static TABLE: &[OptionSpec] = &[
    OptionSpec {
        name: "narenas",
        kind: Kind::Integer { min: 0, max: MAX_ARENAS as i64 },
        default: "0",
        doc: "Number of arenas threads are spread over; 0 means one per CPU (at most 256).",
    },
    OptionSpec {
        name: "tcache",
        kind: Kind::Bool,
        default: "true",
        doc: "Per-thread caches of blocks up to `tcache_max`. Off, every malloc and free takes an arena lock.",
    },
    OptionSpec {
        name: "tcache_max",
        kind: Kind::Integer { min: 0, max: 262144 },
        default: "262144",
        doc: "Largest block size, in bytes, kept in thread caches (at most 256 KiB; above 32 KiB a few whole blocks per thread).",
    },
    OptionSpec {
        name: "dirty_decay_ms",
        kind: Kind::Integer { min: -1, max: 1 << 40 },
        default: "10000",
        doc: "Milliseconds a freed page stays resident before it goes back to the OS (`MADV_FREE` first if `muzzy_decay_ms` is above 0, else `MADV_DONTNEED`); 0 returns pages at once, -1 never. Freed huge blocks (above 2 MiB) wait as long in a mapping cache that holds, with the live huge blocks, at most an eighth more than their peak (or 64 MiB).",
    },
    OptionSpec {
        name: "muzzy_decay_ms",
        kind: Kind::Integer { min: -1, max: 1 << 40 },
        default: "0",
        doc: "Milliseconds a page given back with `MADV_FREE` stays so before `MADV_DONTNEED`; 0 skips the `MADV_FREE` stage, -1 never leaves it.",
    },
    OptionSpec {
        name: "background_thread",
        kind: Kind::Bool,
        default: "false",
        doc: "Start one thread that returns decayed pages on time even while the program is idle.",
    },
    OptionSpec {
        name: "stats_print",
        kind: Kind::Bool,
        default: "false",
        doc: "Print statistics to stderr at exit: a line starting `tally: stats:`, then tables (kept working when the program closes its stderr first).",
    },
    OptionSpec {
        name: "stats_print_opts",
        kind: Kind::Flags(STATS_FLAGS),
        default: "",
        doc: "Letters changing `stats_print` and `malloc_stats`: `J` JSON instead of text, `a` no per-arena table, `b` no per-size-class table.",
    },
    OptionSpec {
        name: "abort_conf",
        kind: Kind::Bool,
        default: "false",
        doc: "Abort the process if `TALLY_CONF` or `MALLOC_CONF` has an error, instead of going on with defaults.",
    },
    OptionSpec {
        name: "junk",
        kind: Kind::Choice(JUNK_CHOICES),
        default: "false",
        doc: "Fill new blocks with 0xa5 (`alloc`), freed blocks with 0x5a (`free`), or both (`true`), to expose reads of uninitialized or freed memory. Turns off thread caches.",
    },
    OptionSpec {
        name: "thp",
        kind: Kind::Choice(THP_CHOICES),
        default: "auto",
        doc: "Transparent huge pages for the memory Tally maps: `auto` refuses them (`MADV_NOHUGEPAGE`) for the arenas' chunks and Tally's own tables, whose pages are handed out and given back one by one (under a system policy of `always`, each chunk's first touch would make 2 MiB resident), and leaves huge blocks (above 2 MiB) to the system's policy; `default` advises nothing, `always` wants them (`MADV_HUGEPAGE`) and `never` refuses them for chunks and huge blocks, as in jemalloc.",
    },
    OptionSpec {
        name: "zero",
        kind: Kind::Bool,
        default: "false",
        doc: "Zero every new block, as calloc does. Turns off thread caches.",
    },
    OptionSpec {
        name: "prof",
        kind: Kind::Bool,
        default: "false",
        doc: "The sampling heap profiler: record the stack of one allocation in every `2^lg_prof_sample` bytes and write heap profiles that `tally report` and `jeprof` read. Reserves 16 GiB of address space (no memory) at 64 GiB for sampled blocks, so that Rust's `dealloc` tells them apart by address (`tally::prof::sampled_region`).",
    },
    OptionSpec {
        name: "prof_active",
        kind: Kind::Bool,
        default: "true",
        doc: "With `prof:true`, whether sampling starts at once; false waits for `tally::prof::activate()` or `tally_prof_activate(1)`.",
    },
    OptionSpec {
        name: "lg_prof_sample",
        kind: Kind::Integer { min: 0, max: 40 },
        default: "19",
        doc: "Mean distance between samples, as a power of two bytes (19: 512 KiB; 0 samples every allocation).",
    },
    OptionSpec {
        name: "lg_prof_interval",
        kind: Kind::Integer { min: -1, max: 62 },
        default: "-1",
        doc: "Write a profile (`<prefix>.<pid>.<seq>.i<n>.heap`) every `2^lg_prof_interval` bytes allocated; -1 never.",
    },
    OptionSpec {
        name: "prof_final",
        kind: Kind::Bool,
        default: "false",
        doc: "Write a profile (`.f.heap`) at exit.",
    },
    OptionSpec {
        name: "prof_leak",
        kind: Kind::Bool,
        default: "false",
        doc: "At exit, print a summary of sampled memory still live and how to read the final profile.",
    },
    OptionSpec {
        name: "prof_gdump",
        kind: Kind::Bool,
        default: "false",
        doc: "Write a profile (`.u<n>.heap`) each time the memory Tally maps reaches a new high.",
    },
    OptionSpec {
        name: "prof_accum",
        kind: Kind::Bool,
        default: "false",
        doc: "Also count what each stack allocated in total, freed or not (the profiles' alloc columns).",
    },
    OptionSpec {
        name: "prof_prefix",
        kind: Kind::Text,
        default: "tally",
        doc: "Path prefix of profile files: `<prefix>.<pid>.<seq>.<kind>.heap`.",
    },
    OptionSpec {
        name: "prof_signal",
        kind: Kind::Signal,
        default: "0",
        doc: "A signal that makes the process write a profile (`.m<n>.heap`) at once: `SIGUSR1`, `SIGUSR2`, `SIGHUP` or `SIGRTMIN+n` up to `SIGRTMAX`, by name (`SIGUSR2`, `USR2`, `SIGRTMIN+3`) or number (12); 0 off. Signals that stop, end or report a fault in the program (`SIGSEGV`, `SIGFPE`, `SIGINT`, `SIGTERM`, `SIGCHLD`, ...) are refused.",
    },
    OptionSpec {
        name: "prof_http",
        kind: Kind::Address,
        default: "",
        doc: "With `prof:true`, serve the live heap over HTTP at `HOST:PORT` (`127.0.0.1:6060`, `[::1]:6060`, `localhost:6060`) for `go tool pprof`, Pyroscope and Parca: `/debug/pprof/heap` (gzipped pprof), `/debug/pprof/allocs`, `/debug/pprof/` and `/debug/tally/stats` (JSON); one small thread, one connection at a time, loopback addresses only unless `prof_http_remote:true` (`docs/continuous-profiling.md`).",
    },
    OptionSpec {
        name: "prof_http_remote",
        kind: Kind::Bool,
        default: "false",
        doc: "Let `prof_http` listen on an address other hosts can reach (the profiles name the program's functions and files: put the port behind a firewall).",
    },
    OptionSpec {
        name: "guard_rate",
        kind: Kind::Integer { min: 0, max: 1 << 40 },
        default: "0",
        doc: "Guarded sampling: place one allocation in `guard_rate` on average (up to 8 KiB, alignment up to a page) between inaccessible guard pages, so that an overflow, underflow or use after free of it faults at once and is reported with the block's allocation and free stacks (`docs/guard.md`); 0 off, 1 every allocation while slots last.",
    },
    OptionSpec {
        name: "guard_slots",
        kind: Kind::Integer { min: 1, max: 16384 },
        default: "64",
        doc: "Guarded sampling: how many blocks may be guarded at once, live or freed and waiting in quarantine (3 pages of address space each; the oldest freed slot is reused first).",
    },
    OptionSpec {
        name: "guard_report",
        kind: Kind::Text,
        default: "",
        doc: "Guarded sampling: also write the report of a caught error to `<guard_report>.<pid>.guard` (it always goes to stderr).",
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
    pub tcache_max: usize,
    /// See [`TABLE`]; -1 = never.
    pub dirty_decay_ms: i64,
    /// See [`TABLE`]; -1 = never.
    pub muzzy_decay_ms: i64,
    /// See [`TABLE`].
    pub background_thread: bool,
    /// See [`TABLE`].
    pub stats_print: bool,
    /// See [`TABLE`]: a set of `STATS_*` bits.
    pub stats_print_opts: u32,
    /// See [`TABLE`].
    pub abort_conf: bool,
    /// Fill new blocks with 0xa5.
    pub junk_alloc: bool,
    /// Fill freed blocks with 0x5a.
    pub junk_free: bool,
    /// See [`TABLE`].
    pub thp: Thp,
    /// See [`TABLE`].
    pub zero: bool,
    /// See [`TABLE`].
    pub prof: bool,
    /// See [`TABLE`].
    pub prof_active: bool,
    /// See [`TABLE`].
    pub lg_prof_sample: u32,
    /// See [`TABLE`]; -1 = off.
    pub lg_prof_interval: i64,
    /// See [`TABLE`].
    pub prof_final: bool,
    /// See [`TABLE`].
    pub prof_leak: bool,
    /// See [`TABLE`].
    pub prof_gdump: bool,
    /// See [`TABLE`].
    pub prof_accum: bool,
    /// See [`TABLE`]; 0 = off.
    pub prof_signal: i32,
    /// See [`TABLE`]: the bytes of `prof_prefix` (the first `prof_prefix_len`, then zeros: a C
    /// string).
    pub prof_prefix: [u8; TEXT_MAX + 1],
    /// Length of `prof_prefix`.
    pub prof_prefix_len: usize,
    /// See [`TABLE`]; 0 = off.
    pub guard_rate: u64,
    /// See [`TABLE`].
    pub guard_slots: usize,
    /// See [`TABLE`]: the bytes of `guard_report` (the first `guard_report_len`; none: stderr
    /// only; then zeros: a C string).
    pub guard_report: [u8; TEXT_MAX + 1],
    /// Length of `guard_report`.
    pub guard_report_len: usize,
    /// See [`TABLE`]: the bytes of `prof_http` (the first `prof_http_len`; none: off; then
    /// zeros: a C string).
    pub prof_http: [u8; TEXT_MAX + 1],
    /// Length of `prof_http`.
    pub prof_http_len: usize,
    /// See [`TABLE`].
    pub prof_http_remote: bool,
}

impl Options {
    /// The defaults (they agree with [`TABLE`]; a test checks it).
    pub const DEFAULT: Options = Options {
        narenas: 0,
        tcache: true,
        tcache_max: 262144,
        dirty_decay_ms: 10_000,
        muzzy_decay_ms: 0,
        background_thread: false,
        stats_print: false,
        stats_print_opts: 0,
        abort_conf: false,
        junk_alloc: false,
        junk_free: false,
        thp: Thp::Auto,
        zero: false,
        prof: false,
        prof_active: true,
        lg_prof_sample: 19,
        lg_prof_interval: -1,
        prof_final: false,
        prof_leak: false,
        prof_gdump: false,
        prof_accum: false,
        prof_signal: 0,
        prof_prefix: {
            let mut p = [0u8; TEXT_MAX + 1];
            p[0] = b't';
            p[1] = b'a';
            p[2] = b'l';
            p[3] = b'l';
            p[4] = b'y';
            p
        },
        prof_prefix_len: 5,
        guard_rate: 0,
        guard_slots: 64,
        guard_report: [0; TEXT_MAX + 1],
        guard_report_len: 0,
        prof_http: [0; TEXT_MAX + 1],
        prof_http_len: 0,
        prof_http_remote: false,
    };

    /// `prof_prefix` as bytes.
    pub fn prof_prefix(&self) -> &[u8] {
        &self.prof_prefix[..self.prof_prefix_len]
    }

    /// `guard_report` as bytes (empty: none).
    pub fn guard_report(&self) -> &[u8] {
        &self.guard_report[..self.guard_report_len]
    }

    /// `prof_http` as bytes (empty: off).
    pub fn prof_http(&self) -> &[u8] {
        &self.prof_http[..self.prof_http_len]
    }

    fn set_text(&mut self, name: &str, value: &[u8]) {
        let (buf, len) = match name {
            "prof_prefix" => (&mut self.prof_prefix, &mut self.prof_prefix_len),
            "guard_report" => (&mut self.guard_report, &mut self.guard_report_len),
            "prof_http" => (&mut self.prof_http, &mut self.prof_http_len),
            _ => return,
        };
        // Zeros after the text, also where an earlier value was longer: the buffer stays a C
        // string (`mallctl("opt.prof_prefix")` hands it out).
        buf.fill(0);
        buf[..value.len()].copy_from_slice(value);
        *len = value.len();
    }

    fn set(&mut self, name: &str, value: i64) {
        match name {
            "narenas" => self.narenas = value as usize,
            "tcache" => self.tcache = value != 0,
            "tcache_max" => self.tcache_max = value as usize,
            "dirty_decay_ms" => self.dirty_decay_ms = value,
            "muzzy_decay_ms" => self.muzzy_decay_ms = value,
            "background_thread" => self.background_thread = value != 0,
            "stats_print" => self.stats_print = value != 0,
            "stats_print_opts" => self.stats_print_opts = value as u32,
            "abort_conf" => self.abort_conf = value != 0,
            "junk" => {
                self.junk_alloc = value == 1 || value == 2;
                self.junk_free = value == 1 || value == 3;
            }
            "thp" => self.thp = Thp::from_index(value as u8),
            "zero" => self.zero = value != 0,
            "prof" => self.prof = value != 0,
            "prof_active" => self.prof_active = value != 0,
            "lg_prof_sample" => self.lg_prof_sample = value as u32,
            "lg_prof_interval" => self.lg_prof_interval = value,
            "prof_final" => self.prof_final = value != 0,
            "prof_leak" => self.prof_leak = value != 0,
            "prof_gdump" => self.prof_gdump = value != 0,
            "prof_accum" => self.prof_accum = value != 0,
            "prof_signal" => self.prof_signal = value as i32,
            "prof_http_remote" => self.prof_http_remote = value != 0,
            "guard_rate" => self.guard_rate = value as u64,
            "guard_slots" => self.guard_slots = value as usize,
            _ => {}
        }
    }

    /// Whether thread caches are in use (junk and zero need every operation on the slow path).
    pub fn caches_enabled(&self) -> bool {
        self.tcache && !self.junk_alloc && !self.junk_free && !self.zero
    }
}

/// Parses each `(variable, text)` of `sources` in order into `opts` (a later one wins on a key
/// both set). The first [`MAX_ERRORS_SHOWN`] errors are passed to `write`, one line each; if
/// there were more, one last line counts them (`tally: ... and 119991 more option errors`), so
/// a runaway setting cannot flood stderr. Returns the number of errors.
pub fn parse_all(sources: &[(&str, &[u8])], opts: &mut Options, write: &mut dyn FnMut(&[u8])) -> usize {
    let mut errors = 0;
    let mut shown = 0;
    for &(var, text) in sources {
        errors += parse(var, text, opts, &mut |line| {
            if shown < MAX_ERRORS_SHOWN {
                write(line);
                shown += 1;
            }
        });
    }
    if errors > MAX_ERRORS_SHOWN {
        let mut line = LineBuf::new();
        let _ = writeln!(
            line,
            "tally: ... and {} more option errors",
            errors - MAX_ERRORS_SHOWN
        );
        write(line.as_bytes());
    }
    errors
}

/// Parses `text` (the value of the variable `var`) into `opts`. Each error is formatted as one
/// line and passed to `on_error`. Returns the number of errors.
#[link_section = ".text.hot.tally"]
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
        // Set but empty (`TALLY_CONF= prog`, or a script passing an empty variable): no options,
        // as jemalloc treats an empty MALLOC_CONF.
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
        if let Kind::Text | Kind::Address = spec.kind {
            if value.is_empty() || value.len() > TEXT_MAX {
                fail(format_args!(
                    "text must be 1 to {TEXT_MAX} bytes for {}",
                    spec.name
                ));
            } else if matches!(spec.kind, Kind::Address) && host_and_port(value).is_none() {
                fail(format_args!(
                    "expected HOST:PORT (127.0.0.1:6060, [::1]:6060, localhost:6060; port 1 to 65535) for {}: \"{}\"",
                    spec.name,
                    Escaped(value)
                ));
            } else {
                opts.set_text(spec.name, value);
            }
            continue;
        }
        match parse_value(spec.kind, value) {
            Ok(v) => opts.set(spec.name, v),
            Err(Refusal::Why(why)) => fail(format_args!("{} for {}: \"{}\"", why, spec.name, Escaped(value))),
            Err(Refusal::NotARequestSignal(sig)) => fail(format_args!(
                "{} takes SIGUSR1, SIGUSR2, SIGHUP or SIGRTMIN..SIGRTMAX, not {}: \"{}\"",
                spec.name,
                tally_pal::process::SignalName(sig),
                Escaped(value)
            )),
        }
    }
    errors
}

/// The host and port of a listening address `HOST:PORT`: `HOST` an IPv4 address, an IPv6 one
/// in brackets (`[::1]`, given back without them) or a host name (letters, digits, `.`, `-`);
/// `PORT` 1 to 65535. `None` when `value` is not of that form.
pub fn host_and_port(value: &[u8]) -> Option<(&str, u16)> {
    let value = core::str::from_utf8(value).ok()?;
    let (host, port) = value.rsplit_once(':')?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u32 = port.parse().ok()?;
    if !(1..=65535).contains(&port) {
        return None;
    }
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6.strip_suffix(']')?;
            v6.parse::<core::net::Ipv6Addr>().ok()?;
            v6
        }
        None => {
            let name = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
            if host.is_empty() || !host.bytes().all(name) {
                return None;
            }
            host
        }
    };
    Some((host, port as u16))
}

/// Why a value was refused.
enum Refusal {
    /// What is wrong, in words.
    Why(&'static str),
    /// A signal that is not one to ask for something with (see [`is_request_signal`]).
    NotARequestSignal(i32),
}

impl From<&'static str> for Refusal {
    fn from(why: &'static str) -> Self {
        Refusal::Why(why)
    }
}

fn parse_value(kind: Kind, value: &[u8]) -> Result<i64, Refusal> {
    match kind {
        Kind::Signal => {
            let sig = if value.first().is_some_and(u8::is_ascii_digit) {
                parse_value(Kind::Integer { min: 0, max: 1024 }, value)
                    .map_err(|_| "expected a signal name or number")?
            } else {
                tally_pal::process::signal_by_name(value).ok_or("unknown signal")? as i64
            };
            if sig != 0 && !is_request_signal(sig as i32) {
                return Err(Refusal::NotARequestSignal(sig as i32));
            }
            Ok(sig)
        }
        Kind::Bool => match value {
            b"true" => Ok(1),
            b"false" => Ok(0),
            _ => Err("expected true or false".into()),
        },
        Kind::Integer { min, max } => {
            let (negative, digits) = match value.split_first() {
                Some((b'-', rest)) if min < 0 => (true, rest),
                _ => (false, value),
            };
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err("expected a whole number".into());
            }
            let mut n: i64 = 0;
            for &d in digits {
                n = match n.checked_mul(10).and_then(|n| n.checked_add((d - b'0') as i64)) {
                    Some(n) => n,
                    None => return Err("number out of range".into()),
                };
            }
            let n = if negative { -n } else { n };
            if n < min || n > max {
                return Err("number out of range".into());
            }
            Ok(n)
        }
        Kind::Choice(words) => match words.iter().position(|w| w.as_bytes() == value) {
            Some(i) => Ok(i as i64),
            None => Err("not one of the allowed words".into()),
        },
        Kind::Flags(allowed) => {
            let mut bits = 0i64;
            for &c in value {
                let Some(i) = allowed.bytes().position(|a| a == c) else {
                    return Err("unknown flag letter".into());
                };
                if bits & 1 << i != 0 {
                    return Err("flag letter given twice".into());
                }
                bits |= 1 << i;
            }
            Ok(bits)
        }
        Kind::Text | Kind::Address => Err("text".into()),
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
            // A text option whose default is none cannot be written (text is 1 byte or more).
            if matches!(spec.kind, Kind::Text | Kind::Address) && spec.default.is_empty() {
                continue;
            }
            text.push_str(&format!("{}:{},", spec.name, spec.default));
        }
        text.pop();
        let (opts, errors) = run(text.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(opts, Options::DEFAULT);
        let (opts, errors) = run(b"guard_rate:1000,guard_slots:8,guard_report:/tmp/g");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            (opts.guard_rate, opts.guard_slots, opts.guard_report()),
            (1000, 8, &b"/tmp/g"[..])
        );
        let (opts, errors) = run(b"guard_slots:0,guard_rate:-1");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!((opts.guard_rate, opts.guard_slots), (0, 64));
    }

    #[test]
    fn good_options_are_taken() {
        let (opts, errors) = run(
            b"narenas:3,tcache:false,stats_print:true,dirty_decay_ms:-1,muzzy_decay_ms:500,junk:free,stats_print_opts:Ja,tcache_max:1024,zero:true,background_thread:true",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(opts.narenas, 3);
        assert!(!opts.tcache && opts.stats_print && opts.zero && opts.background_thread);
        assert_eq!((opts.dirty_decay_ms, opts.muzzy_decay_ms), (-1, 500));
        assert!(opts.junk_free && !opts.junk_alloc);
        assert_eq!(opts.stats_print_opts, STATS_JSON | STATS_NO_ARENAS);
        assert_eq!(opts.tcache_max, 1024);
    }

    #[test]
    fn thp_takes_jemallocs_words_and_auto() {
        assert_eq!(Options::DEFAULT.thp, Thp::Auto);
        for (i, word) in THP_CHOICES.iter().enumerate() {
            let (opts, errors) = run(format!("thp:{word}").as_bytes());
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(opts.thp, Thp::from_index(i as u8));
            assert_eq!(opts.thp.word(), *word);
        }
        let (opts, errors) = run(b"thp:never,thp:sometimes");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("not one of the allowed words for thp"),
            "{errors:?}"
        );
        assert_eq!(opts.thp, Thp::Never, "a bad value keeps the one before");
    }

    #[test]
    fn prof_http_takes_host_and_port_only() {
        let (opts, errors) = run(b"prof_http:127.0.0.1:6060,prof_http_remote:true");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(opts.prof_http(), b"127.0.0.1:6060");
        assert!(opts.prof_http_remote);
        for good in [
            &b"[::1]:1"[..],
            b"localhost:65535",
            b"0.0.0.0:80",
            b"my-host.example:8080",
        ] {
            let (opts, errors) = run(&[&b"prof_http:"[..], good].concat());
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(opts.prof_http(), good);
        }
        assert_eq!(host_and_port(b"[::1]:6060"), Some(("::1", 6060)));
        assert_eq!(host_and_port(b"localhost:7"), Some(("localhost", 7)));
        for bad in [
            &b"6060"[..],
            b"127.0.0.1",
            b"127.0.0.1:0",
            b"127.0.0.1:65536",
            b"127.0.0.1:60x",
            b":6060",
            b"::1:6060",
            b"[::1:6060",
            b"[zz]:6060",
            b"a b:6060",
            b"host:",
        ] {
            let (opts, errors) = run(&[&b"prof_http:"[..], bad].concat());
            assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
            assert!(errors[0].contains("expected HOST:PORT"), "{errors:?}");
            assert_eq!(opts.prof_http(), b"");
        }
    }

    #[test]
    fn an_empty_string_sets_nothing_and_is_no_error() {
        let mut opts = Options::DEFAULT;
        let mut lines = 0;
        assert_eq!(parse("TALLY_CONF", b"", &mut opts, &mut |_| lines += 1), 0);
        assert_eq!(lines, 0);
        assert_eq!(opts.narenas, Options::DEFAULT.narenas);
    }

    #[test]
    fn bad_options_give_one_line_each_and_keep_defaults() {
        let long = "x".repeat(10 * 1024);
        let cases: &[&[u8]] = &[
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
            b"dirty_decay_ms:-2",
            b"dirty_decay_ms:--1",
            b"tcache_max:-1",
            b"junk:maybe",
            b"thp:madvise",
            b"thp:",
            b"thp:Always",
            b"stats_print_opts:JJ",
            b"stats_print_opts:x",
            b"tcache_max:262145",
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
    fn signals_by_name_or_number_and_only_those_meant_for_requests() {
        let (rt_min, rt_max) = tally_pal::process::realtime_signals();
        for (text, sig) in [
            ("prof_signal:12", libc::SIGUSR2),
            ("prof_signal:SIGUSR2", libc::SIGUSR2),
            ("prof_signal:USR2", libc::SIGUSR2),
            ("prof_signal:usr1", libc::SIGUSR1),
            ("prof_signal:SIGHUP", libc::SIGHUP),
            ("prof_signal:1", libc::SIGHUP),
            ("prof_signal:SIGRTMIN+3", rt_min + 3),
            ("prof_signal:SIGRTMIN", rt_min),
            ("prof_signal:SIGRTMAX", rt_max),
            ("prof_signal:0", 0),
        ] {
            let (opts, errors) = run(text.as_bytes());
            assert!(errors.is_empty(), "{text}: {errors:?}");
            assert_eq!(opts.prof_signal, sig, "{text}");
        }
        let rt_min_text = std::format!("prof_signal:{rt_min}");
        let (opts, errors) = run(rt_min_text.as_bytes());
        assert!(errors.is_empty() && opts.prof_signal == rt_min, "{errors:?}");

        for (text, says) in [
            ("prof_signal:11", "not SIGSEGV: \"11\""),
            ("prof_signal:SIGSEGV", "not SIGSEGV"),
            ("prof_signal:SEGV", "not SIGSEGV"),
            ("prof_signal:8", "not SIGFPE"),
            ("prof_signal:SIGBUS", "not SIGBUS"),
            ("prof_signal:SIGILL", "not SIGILL"),
            ("prof_signal:SIGABRT", "not SIGABRT"),
            ("prof_signal:SIGTRAP", "not SIGTRAP"),
            ("prof_signal:SIGSYS", "not SIGSYS"),
            ("prof_signal:SIGKILL", "not SIGKILL"),
            ("prof_signal:SIGSTOP", "not SIGSTOP"),
            ("prof_signal:SIGTSTP", "not SIGTSTP"),
            ("prof_signal:SIGINT", "not SIGINT"),
            ("prof_signal:SIGTERM", "not SIGTERM"),
            ("prof_signal:SIGQUIT", "not SIGQUIT"),
            ("prof_signal:SIGCHLD", "not SIGCHLD"),
            ("prof_signal:SIGPIPE", "not SIGPIPE"),
            ("prof_signal:SIGALRM", "not SIGALRM"),
            ("prof_signal:32", "not signal 32"),
            ("prof_signal:65", "not signal 65"),
            ("prof_signal:SIGFOO", "unknown signal for prof_signal"),
            ("prof_signal:SIGRTMIN+99", "unknown signal for prof_signal"),
            ("prof_signal:-1", "unknown signal for prof_signal"),
            (
                "prof_signal:99999999999999999999",
                "expected a signal name or number",
            ),
            ("prof_signal:12x", "expected a signal name or number"),
        ] {
            let (opts, errors) = run(text.as_bytes());
            assert_eq!(errors.len(), 1, "{text}: {errors:?}");
            assert!(errors[0].contains(says), "{text}: {:?}", errors[0]);
            assert!(errors[0].starts_with("tally: TALLY_CONF: "), "{:?}", errors[0]);
            assert_eq!(opts.prof_signal, 0, "{text}");
        }
    }

    #[test]
    fn errors_stop_after_ten_with_a_count_of_the_rest() {
        let commas = ",".repeat(120_000);
        let mut opts = Options::DEFAULT;
        let mut lines = std::vec::Vec::new();
        let errors = parse_all(
            &[
                ("MALLOC_CONF", b"unknown:1,narenas:2"),
                ("TALLY_CONF", commas.as_bytes()),
            ],
            &mut opts,
            &mut |l| lines.push(std::string::String::from_utf8(l.to_vec()).unwrap()),
        );
        assert_eq!(errors, 120_002);
        assert_eq!(lines.len(), MAX_ERRORS_SHOWN + 1, "{lines:?}");
        assert!(lines[0].starts_with("tally: MALLOC_CONF: unknown option"));
        assert!(lines[1].starts_with("tally: TALLY_CONF: empty option"));
        assert_eq!(lines[10], "tally: ... and 119992 more option errors\n");
        assert_eq!(opts.narenas, 2);

        let mut lines = 0;
        let ten = ",".repeat(9);
        assert_eq!(
            parse_all(&[("TALLY_CONF", ten.as_bytes())], &mut opts, &mut |_| lines += 1),
            10
        );
        assert_eq!(lines, 10, "ten errors are all shown, with no count line");
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let (opts, errors) = run(b"narenas:2,narenas:5");
        assert!(errors.is_empty());
        assert_eq!(opts.narenas, 5);
    }
}
