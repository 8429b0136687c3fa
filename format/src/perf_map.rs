//! Perf maps: the names a JIT compiler gives the code it writes into anonymous memory, in the
//! text format `perf` reads from `/tmp/perf-<pid>.map`, and those names as people read them.
//!
//! A perf map has one entry per line, `START SIZE NAME`: START and SIZE in hex, with or without
//! `0x`, NAME the rest of the line. Who writes one:
//! - a JVM (HotSpot) with `-XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit` at exit, or on
//!   `jcmd <pid> Compiler.perfmap` while it runs: a snapshot of the code cache, compiled methods
//!   as `Method::external_name()`
//!   (`void java.util.zip.GZIPOutputStream.<init>(java.io.OutputStream)`), other code blobs by
//!   their name (`Interpreter`, `StubRoutines (1)`, `I2C/C2I adapters`, `handle_exception
//!   Runtime1 stub`, …); the perf-map-agent JVMTI agent writes methods as
//!   `Ljava/util/zip/GZIPOutputStream;::<init>` (its `dottedclass` option:
//!   `java.util.zip.GZIPOutputStream::<init>`), with `msig` a descriptor after the name; Tally's
//!   agent (`-agentpath:libtally_jvm.so`) writes HotSpot's shape as methods are compiled, and
//!   inline chains (below);
//! - node (V8) with `--perf-basic-prof` (or `--perf-basic-prof-only-functions`: JavaScript
//!   only): an append log, `JS:*fib /app/fib.js:1:13` in v20 (`LazyCompile:`, `Function:`,
//!   `Script:` before), the character after the colon telling the tier (`~` interpreted, `^`
//!   baseline, `+` Maglev, `*` TurboFan), an empty name for an anonymous function; `Builtin:…`,
//!   `BytecodeHandler:…`, `RegExp:…` for V8's own code;
//! - CPython 3.12+ with `-X perf`: `py::<qualified name>:<file>`.
//!
//! Code is freed and its memory reused, so entries may overlap; as in `perf`, a later line wins
//! over the earlier ones it overlaps (the [`PerfMap`] keeps, for each address, the last entry
//! that covered it).
//!
//! Names print as in each language's own stack traces, shortened like native names are
//! ([`crate::demangle`] drops C++ parameter lists): Java `java.util.zip.GZIPOutputStream.<init>`
//! (no return type, no parameters: overloads share a row, like C++'s; a hidden class's
//! `/0x…` suffix, which changes from run to run, is dropped), JavaScript `fib /app/fib.js:1`
//! (`(anonymous) /app/fib.js:7` without a name), Python `handle /app/server.py`. The JVM's
//! template interpreter prints `[java interpreter]`, its other code blobs `[jvm stub] <name>`,
//! V8's builtins `[v8 builtin] <name>` and its other non-JavaScript code `[v8] <kind>:<name>`;
//! a name in no known shape prints as written.
//!
//! **Inline chains.** Tally's JVMTI agent (`libtally_jvm.so`, crate `tally-jvm-agent`) also
//! writes, for each call in compiled Java code that C2 inlined other methods into, a 2-byte entry
//! around the call's return address whose name is the chain of Java frames live there, the
//! compiled method first, joined by `->` (perf-map-agent's `unfold` shape):
//! `GzipLogger.logLeaky->java.util.zip.GZIPOutputStream.<init>->java.util.zip.Deflater.<init>`.
//! Each part is `<class>.<method>` or any Java shape above. Such a name reads as several frames
//! ([`PerfMap::readable_frames`]), innermost first like a DWARF inline chain; a name with `->`
//! whose parts are not all Java methods (C++'s `operator->`) is one name as written.

use std::collections::BTreeMap;
use std::format;
use std::string::{String, ToString};
use std::time::{Duration, SystemTime};
use std::vec;
use std::vec::Vec;

/// When a process started, from the text of its `/proc/<pid>/stat` (field 22: clock ticks since
/// boot), of `/proc/stat` (`btime`: the boot time) and the ticks per second
/// (`sysconf(_SC_CLK_TCK)`): a perf map at `/tmp/perf-<pid>.map` written before that is another
/// process's, one that had the same pid. `None` if the texts are not in that shape.
pub fn process_start(stat: &str, proc_stat: &str, ticks_per_second: u64) -> Option<SystemTime> {
    // The command name (field 2) is in parentheses and may hold spaces; fields 3.. follow.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    if ticks_per_second == 0 {
        return None;
    }
    let since_boot = Duration::from_millis(ticks.saturating_mul(1000) / ticks_per_second);
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(boot) + since_boot)
}

/// One line of a perf map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// First address of the code.
    pub start: u64,
    /// One past its last address (saturating).
    pub end: u64,
    /// The name as written.
    pub name: String,
}

/// A parsed perf map: its entries and, for lookups, the pieces of the address space where each
/// entry is the last one written.
///
/// Invariant: the pieces are disjoint, non-empty, and each lies within its entry:
/// `entries[i].start <= piece.start < piece.end <= entries[i].end`.
#[derive(Debug, Clone, Default)]
pub struct PerfMap {
    entries: Vec<Entry>,
    /// Piece start → (piece end, entry index).
    pieces: BTreeMap<u64, (u64, usize)>,
    /// Whether the map comes from a JVM (it names the `Interpreter` or a Java method).
    jvm: bool,
    /// Lines that were not `START SIZE NAME`.
    pub skipped: usize,
    /// The first of them (1-based), for the warning.
    pub first_skipped: Option<usize>,
}

impl PerfMap {
    /// Parses the text of a perf map. Lines that are not `START SIZE NAME` (a line cut short by
    /// a writer still appending, say) are skipped and counted, never fatal; empty lines are
    /// ignored. Entries of size 0 cover nothing.
    pub fn parse(text: &[u8]) -> PerfMap {
        let mut map = PerfMap::default();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = String::from_utf8_lossy(line);
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line) {
                Some(entry) => map.add(entry),
                None => {
                    map.skipped += 1;
                    map.first_skipped.get_or_insert(index + 1);
                }
            }
        }
        map
    }

    /// The entries in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether the map was written by a JVM.
    pub fn is_jvm(&self) -> bool {
        self.jvm
    }

    /// The entry that names `address`: the last one written that covers it.
    pub fn lookup(&self, address: u64) -> Option<&Entry> {
        let (_, &(end, index)) = self.pieces.range(..=address).next_back()?;
        (address < end).then(|| &self.entries[index])
    }

    /// The readable name of `entry` (module docs); an inline chain's innermost frame.
    pub fn readable_name(&self, entry: &Entry) -> String {
        match inline_chain(&entry.name) {
            Some(mut chain) => chain.pop().unwrap_or_default(),
            None => readable_name(&entry.name, self.jvm),
        }
    }

    /// The readable frames of `entry`, innermost first: one, or an inline chain's (module docs).
    /// Never empty.
    pub fn readable_frames(&self, entry: &Entry) -> Vec<String> {
        match inline_chain(&entry.name) {
            Some(mut chain) => {
                chain.reverse();
                chain
            }
            None => vec![readable_name(&entry.name, self.jvm)],
        }
    }

    /// Adds `entry` over the earlier ones it overlaps.
    fn add(&mut self, entry: Entry) {
        self.jvm |= entry.name == "Interpreter"
            || java_method(&entry.name).is_some()
            || inline_chain(&entry.name).is_some();
        let index = self.entries.len();
        let (start, end) = (entry.start, entry.end);
        self.entries.push(entry);
        if start >= end {
            return;
        }
        // The pieces that overlap [start, end): the one starting before `start` (if it reaches
        // past it) and every one starting inside.
        let mut overlapping: Vec<(u64, u64, usize)> = Vec::new();
        if let Some((&piece_start, &(piece_end, i))) = self.pieces.range(..start).next_back() {
            if piece_end > start {
                overlapping.push((piece_start, piece_end, i));
            }
        }
        overlapping.extend(
            self.pieces
                .range(start..end)
                .map(|(&piece_start, &(piece_end, i))| (piece_start, piece_end, i)),
        );
        for (piece_start, piece_end, i) in overlapping {
            self.pieces.remove(&piece_start);
            if piece_start < start {
                self.pieces.insert(piece_start, (start, i));
            }
            if piece_end > end {
                self.pieces.insert(end, (piece_end, i));
            }
        }
        self.pieces.insert(start, (end, index));
    }

    /// Checks the invariant on the type.
    pub fn debug_check_invariants(&self) {
        let mut previous_end = 0;
        for (&start, &(end, index)) in &self.pieces {
            let entry = &self.entries[index];
            assert!(start >= previous_end, "pieces overlap at {start:#x}");
            assert!(start < end, "empty piece at {start:#x}");
            assert!(
                entry.start <= start && end <= entry.end,
                "piece outside its entry"
            );
            previous_end = end;
        }
    }
}

/// `START SIZE NAME`, hex numbers with or without `0x`.
fn parse_line(line: &str) -> Option<Entry> {
    let mut parts = line.trim_start().splitn(3, [' ', '\t']);
    let start = hex(parts.next()?)?;
    let size = hex(parts.next()?)?;
    let name = parts.next()?.trim();
    if name.is_empty() {
        return None;
    }
    Some(Entry {
        start,
        end: start.saturating_add(size),
        name: name.to_string(),
    })
}

fn hex(text: &str) -> Option<u64> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// The readable form of a perf map name (module docs); `jvm`: the map is a JVM's.
pub fn readable_name(name: &str, jvm: bool) -> String {
    if let Some(method) = java_method(name) {
        return method;
    }
    if jvm && name == "Interpreter" {
        return "[java interpreter]".to_string();
    }
    if let Some(name) = v8_name(name) {
        return name;
    }
    if let Some(rest) = name.strip_prefix("py::") {
        // `<qualified name>:<file>`: the file may hold colons, the qualified name does not.
        if let Some((function, file)) = rest.split_once(':') {
            return format!("{function} {file}");
        }
    }
    if jvm {
        return format!("[jvm stub] {name}");
    }
    name.to_string()
}

/// The readable names of an inline chain's parts, outer first (module docs); `None` when `name`
/// is not a chain of two or more Java methods.
fn inline_chain(name: &str) -> Option<Vec<String>> {
    if !name.contains("->") {
        return None;
    }
    let parts: Option<Vec<String>> = name
        .split("->")
        .map(|part| java_method(part).or_else(|| dotted_java_method(part)))
        .collect();
    parts.filter(|parts| parts.len() > 1)
}

/// `Class.method` from `<dotted class>.<method>` (`java.util.zip.Deflater.<init>`, a hidden
/// class's `LambdaForm$MH/0x0000000800c0c400.invoke`).
fn dotted_java_method(name: &str) -> Option<String> {
    let (class, method) = name.rsplit_once('.')?;
    let class_ok = !class.is_empty() && class.chars().all(|c| c.is_alphanumeric() || "_$./".contains(c));
    let method_ok = !method.is_empty() && method.chars().all(|c| c.is_alphanumeric() || "_$<>".contains(c));
    (class_ok && method_ok).then(|| format!("{}.{method}", without_hidden_suffix(class)))
}

/// `Class.method` from a HotSpot, perf-map-agent or dotted perf-map-agent name.
fn java_method(name: &str) -> Option<String> {
    // HotSpot: `<return type> <class>.<method>(<parameter types>)`.
    if let Some(head) = name
        .strip_suffix(')')
        .and_then(|n| n.split_once('('))
        .map(|(h, _)| h)
    {
        if let Some((return_type, qualified)) = head.rsplit_once(' ') {
            let (class, method) = qualified.rsplit_once('.')?;
            let plausible =
                |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "_$.[]/<>".contains(c));
            if plausible(return_type) && plausible(class) && plausible(method) && !return_type.contains('<') {
                return Some(format!("{}.{method}", without_hidden_suffix(class)));
            }
        }
        return None;
    }
    // perf-map-agent: `L<class with slashes>;::<method>[<descriptor>]`, or with `dottedclass`,
    // `<dotted class>::<method>[<descriptor>]`.
    let (class, rest) = name.split_once("::")?;
    let class = match class.strip_prefix('L').and_then(|c| c.strip_suffix(';')) {
        Some(class) => class.replace('/', "."),
        None if class.contains('.') && !class.contains(' ') => class.to_string(),
        None => return None,
    };
    let method: String = rest
        .chars()
        .take_while(|&c| c != '(' && c != ' ' && c != '-')
        .collect();
    if method.is_empty() || class.is_empty() {
        return None;
    }
    Some(format!("{}.{method}", without_hidden_suffix(&class)))
}

/// A hidden class's name without its `/0x<address>` suffix (`LambdaForm$MH/0x0000000800c0c400`).
fn without_hidden_suffix(class: &str) -> &str {
    match class.rsplit_once('/') {
        Some((name, suffix))
            if suffix.starts_with("0x") && suffix[2..].bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            name
        }
        _ => class,
    }
}

/// The name of a V8 `--perf-basic-prof` entry.
fn v8_name(name: &str) -> Option<String> {
    let (kind, rest) = name.split_once(':')?;
    match kind {
        "JS" | "LazyCompile" | "Function" | "Script" | "Eval" => {
            let rest = rest
                .strip_prefix(|c| matches!(c, '~' | '^' | '+' | '*'))
                .unwrap_or(rest);
            let (function, location) = match rest.rsplit_once(' ') {
                Some((function, location)) if js_location(location).is_some() => {
                    (function.trim(), js_location(location))
                }
                _ => (rest.trim(), None),
            };
            let function = if function.is_empty() {
                "(anonymous)"
            } else {
                function
            };
            Some(match location {
                Some(location) => format!("{function} {location}"),
                None => function.to_string(),
            })
        }
        "Builtin" => Some(format!("[v8 builtin] {rest}")),
        "BytecodeHandler" | "RegExp" | "Stub" | "Handler" | "KeyedLoadIC" | "KeyedStoreIC" | "LoadIC"
        | "StoreIC" | "Callback" => Some(format!("[v8] {name}")),
        _ => None,
    }
}

/// `file:line` from V8's `file:line:column` (or `file:line`); `None` when it is not one.
fn js_location(location: &str) -> Option<String> {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (head, last) = location.rsplit_once(':')?;
    if !number(last) {
        return None;
    }
    match head.rsplit_once(':') {
        Some((file, line)) if number(line) && !file.is_empty() => Some(format!("{file}:{line}")),
        _ if !head.is_empty() => Some(format!("{head}:{last}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn process_start_is_boot_time_plus_field_22() {
        // Field 22 (starttime) is the 20th after the parenthesised command name.
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let start = super::process_start(stat, proc_stat, 100).unwrap();
        assert_eq!(
            start,
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000 + 123_450)
        );
        assert_eq!(super::process_start(stat, "cpu 1\n", 100), None);
        assert_eq!(super::process_start("4242 (x) S 1", proc_stat, 100), None);
        assert_eq!(super::process_start(stat, proc_stat, 0), None);
    }

    use super::*;

    fn map(text: &str) -> PerfMap {
        let map = PerfMap::parse(text.as_bytes());
        map.debug_check_invariants();
        map
    }

    fn name_at(map: &PerfMap, address: u64) -> Option<String> {
        map.lookup(address).map(|entry| map.readable_name(entry))
    }

    #[test]
    fn parses_hex_with_and_without_0x() {
        let map = map(
            "0x00007f53f8ed2120 0x00000000000001e8 long java.util.zip.Deflater.init(int, int, boolean)\n\
             7f43cc006180 180 JS:*fib /tmp/pm/fib.js:1:13\r\n\n",
        );
        assert_eq!(map.entries().len(), 2);
        assert_eq!(map.entries()[0].start, 0x7f53f8ed2120);
        assert_eq!(map.entries()[0].end, 0x7f53f8ed2120 + 0x1e8);
        assert_eq!(map.entries()[1].name, "JS:*fib /tmp/pm/fib.js:1:13");
        assert_eq!(map.skipped, 0);
        assert_eq!(
            name_at(&map, 0x7f53f8ed2120 + 0x1e7).as_deref(),
            Some("java.util.zip.Deflater.init")
        );
        assert_eq!(name_at(&map, 0x7f53f8ed2120 + 0x1e8), None);
        assert_eq!(name_at(&map, 0x7f53f8ed211f), None);
    }

    #[test]
    fn skips_and_counts_bad_lines() {
        let map = map("zz 10 bad start\n1000 10 ok\n2000 10\n3000\n0x 10 empty hex\n\
             4000 -5 negative\n\u{fffd}\u{0}\n5000 ffffffffffffffff to the end\n6000 100");
        assert_eq!(map.skipped, 7);
        assert_eq!(map.first_skipped, Some(1));
        assert_eq!(name_at(&map, 0x1005).as_deref(), Some("ok"));
        // A size that runs past the end of the address space saturates; a later entry wins.
        assert_eq!(name_at(&map, u64::MAX - 1).as_deref(), Some("to the end"));
        assert_eq!(map.entries().len(), 2);
        assert!(PerfMap::parse(b"").entries().is_empty());
        assert_eq!(PerfMap::parse(&[0xff, 0xfe, b'\n', 0]).skipped, 2);
    }

    #[test]
    fn later_entries_win_over_earlier_overlapping_ones() {
        let map = map("100 100 A\n\
             180 20 B\n\
             0f0 20 C\n\
             1f0 20 D\n\
             190 8 E\n\
             300 0 empty\n");
        let at = |address| name_at(&map, address);
        assert_eq!(at(0xef), None);
        assert_eq!(at(0xf0).as_deref(), Some("C"));
        assert_eq!(at(0x10f).as_deref(), Some("C"));
        assert_eq!(at(0x110).as_deref(), Some("A"));
        assert_eq!(at(0x17f).as_deref(), Some("A"));
        assert_eq!(at(0x180).as_deref(), Some("B"));
        assert_eq!(at(0x190).as_deref(), Some("E"));
        assert_eq!(at(0x198).as_deref(), Some("B"));
        assert_eq!(at(0x1a0).as_deref(), Some("A"));
        assert_eq!(at(0x1ef).as_deref(), Some("A"));
        assert_eq!(at(0x1f0).as_deref(), Some("D"));
        assert_eq!(at(0x20f).as_deref(), Some("D"));
        assert_eq!(at(0x210), None);
        assert_eq!(at(0x300), None);
        // The same range written again (JIT code freed and its memory reused).
        let map = self::map("100 10 old\n100 10 new\n");
        assert_eq!(name_at(&map, 0x105).as_deref(), Some("new"));
    }

    /// Entries as OpenJDK 17's `-XX:+DumpPerfMapAtExit` wrote them for `GzipLogger.java`.
    const HOTSPOT: &str = "\
0x00007f53f8940b80 0x0000000000017de0 Interpreter
0x00007f53f8938c00 0x0000000000007530 StubRoutines (1)
0x00007f53f8958a00 0x00000000000001b0 I2C/C2I adapters
0x00007f53f89a0780 0x00000000000002f0 fast_new_instance Runtime1 stub
0x00007f53f899e800 0x0000000000000060 _new_array_Java
0x00007f53f8ec7600 0x0000000000000020 java.lang.Object java.lang.invoke.MethodHandle.linkToStatic(java.lang.Object, java.lang.Object, java.lang.invoke.MemberName)
0x00007f53f8ecc180 0x0000000000000078 void java.lang.Object.<init>()
0x00007f53f8ed02a0 0x00000000000000d0 byte[] java.lang.String.value()
0x00007f53f8ed05a0 0x00000000000000d0 long java.util.zip.Deflater$DeflaterZStreamRef.address()
0x00007f53f1401ac0 0x00000000000002f0 java.util.concurrent.ConcurrentHashMap$Node java.util.concurrent.ConcurrentHashMap.tabAt(java.util.concurrent.ConcurrentHashMap$Node[], int)
0x00007f53f1402000 0x0000000000000100 java.lang.Object java.lang.invoke.LambdaForm$MH/0x0000000800c0c400.invoke(java.lang.Object, int)
";

    #[test]
    fn names_hotspot_entries_as_java_people_read_them() {
        let map = map(HOTSPOT);
        assert!(map.is_jvm());
        let names: Vec<String> = map.entries().iter().map(|e| map.readable_name(e)).collect();
        assert_eq!(
            names,
            [
                "[java interpreter]",
                "[jvm stub] StubRoutines (1)",
                "[jvm stub] I2C/C2I adapters",
                "[jvm stub] fast_new_instance Runtime1 stub",
                "[jvm stub] _new_array_Java",
                "java.lang.invoke.MethodHandle.linkToStatic",
                "java.lang.Object.<init>",
                "java.lang.String.value",
                "java.util.zip.Deflater$DeflaterZStreamRef.address",
                "java.util.concurrent.ConcurrentHashMap.tabAt",
                "java.lang.invoke.LambdaForm$MH.invoke",
            ]
        );
    }

    #[test]
    fn names_perf_map_agent_entries() {
        for (raw, name) in [
            (
                "Ljava/util/zip/GZIPOutputStream;::<init>",
                "java.util.zip.GZIPOutputStream.<init>",
            ),
            (
                "Ljava/util/zip/GZIPOutputStream;::<init>(Ljava/io/OutputStream;)V",
                "java.util.zip.GZIPOutputStream.<init>",
            ),
            (
                "java.util.zip.GZIPOutputStream::<init>",
                "java.util.zip.GZIPOutputStream.<init>",
            ),
            ("LGzipLogger;::logLeaky", "GzipLogger.logLeaky"),
        ] {
            assert_eq!(readable_name(raw, false), name, "{raw}");
        }
        let map = map("1000 10 Ljava/util/zip/Deflater;::init\n2000 10 Interpreter\n");
        assert!(map.is_jvm());
        assert_eq!(name_at(&map, 0x2000).as_deref(), Some("[java interpreter]"));
    }

    #[test]
    fn reads_inline_chains_as_frames_innermost_first() {
        // As the agent writes them: the method's line, then a 2-byte line per inlined call.
        let map = map("\
0x00007fb9e144aca0 0x0000000000000cf0 byte[] GzipLogger.logLeaky(java.lang.String)
0x00007fb9e144ae63 0x0000000000000002 GzipLogger.logLeaky->java.util.zip.GZIPOutputStream.<init>->java.util.zip.Deflater.<init>
0x00007fb9e144af10 0x0000000000000002 GzipLogger.logLeaky->java.lang.invoke.LambdaForm$MH/0x0000000800c0c400.invoke
");
        assert!(map.is_jvm());
        let frames = |address| map.readable_frames(map.lookup(address).unwrap());
        assert_eq!(frames(0x7fb9e144ae62), ["GzipLogger.logLeaky"]);
        let chain = [
            "java.util.zip.Deflater.<init>",
            "java.util.zip.GZIPOutputStream.<init>",
            "GzipLogger.logLeaky",
        ];
        // The return address and the call address (one before) both read as the chain.
        assert_eq!(frames(0x7fb9e144ae63), chain);
        assert_eq!(frames(0x7fb9e144ae64), chain);
        assert_eq!(frames(0x7fb9e144ae65), ["GzipLogger.logLeaky"]);
        assert_eq!(
            frames(0x7fb9e144af11),
            ["java.lang.invoke.LambdaForm$MH.invoke", "GzipLogger.logLeaky"]
        );
        assert_eq!(
            name_at(&map, 0x7fb9e144ae64).as_deref(),
            Some("java.util.zip.Deflater.<init>")
        );
        // Parts in the other Java shapes; an only-Java map is a JVM's.
        let map = self::map("1000 2 void A.run()->Lb/C;::call->d.E::f\n");
        assert!(map.is_jvm());
        assert_eq!(
            map.readable_frames(&map.entries()[0]),
            ["d.E.f", "b.C.call", "A.run"]
        );
        // Not chains: C++ and JavaScript names with `->`, a chain of one, empty parts.
        for name in [
            "std::unique_ptr<Foo>::operator->",
            "JS:*a->b /app/x.js:1:1",
            "A.run->",
            "->A.run",
            "A.run->->B.c",
            "A.run->B c.d",
        ] {
            let map = self::map(&format!("1000 2 {name}\n"));
            assert_eq!(map.readable_frames(&map.entries()[0]).len(), 1, "{name}");
            assert_eq!(
                map.readable_name(&map.entries()[0]),
                readable_name(name, false),
                "{name}"
            );
            assert!(!map.is_jvm(), "{name}");
        }
    }

    #[test]
    fn names_node_entries() {
        // As node v20 wrote them with --perf-basic-prof, and the older `LazyCompile:` shape.
        for (raw, name) in [
            ("JS:*fib /tmp/pm/fib.js:1:13", "fib /tmp/pm/fib.js:1"),
            ("JS:~work /tmp/pm/fib.js:3:14", "work /tmp/pm/fib.js:3"),
            ("JS:^fib /tmp/pm/fib.js:1:13", "fib /tmp/pm/fib.js:1"),
            ("JS:~ /tmp/pm/fib.js:1:1", "(anonymous) /tmp/pm/fib.js:1"),
            (
                "JS:~setupNetworkInspection node:internal/process/pre_execution:478:32",
                "setupNetworkInspection node:internal/process/pre_execution:478",
            ),
            ("Eval:~ /tmp/pm/fib.js:1:1", "(anonymous) /tmp/pm/fib.js:1"),
            ("LazyCompile:*fib /app/fib.js:3", "fib /app/fib.js:3"),
            ("LazyCompile:~get foo /app/a.js:10", "get foo /app/a.js:10"),
            ("JS:*main", "main"),
            ("Function:~", "(anonymous)"),
            (
                "Builtin:InterpreterEntryTrampoline",
                "[v8 builtin] InterpreterEntryTrampoline",
            ),
            ("BytecodeHandler:LdaZero", "[v8] BytecodeHandler:LdaZero"),
            ("RegExp:[a-z]+", "[v8] RegExp:[a-z]+"),
        ] {
            assert_eq!(readable_name(raw, false), name, "{raw}");
        }
        let map = map(
            "18c4000 300 Builtin:DeoptimizationEntry_Eager\n7f43cc006180 180 JS:*fib /tmp/pm/fib.js:1:13\n",
        );
        assert!(!map.is_jvm());
    }

    #[test]
    fn names_python_and_other_entries() {
        assert_eq!(
            readable_name("py::Server.handle:/app/server.py", false),
            "Server.handle /app/server.py"
        );
        assert_eq!(
            readable_name("[OptimizedTier1] Foo::Bar", false),
            "[OptimizedTier1] Foo::Bar"
        );
        assert_eq!(readable_name("StubRoutines (1)", false), "StubRoutines (1)");
        assert_eq!(readable_name("lua: trace 12", false), "lua: trace 12");
    }
}
