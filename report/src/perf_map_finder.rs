//! Which perf map names the JIT code of a dump, and whether it may be trusted.
//!
//! The map of process `<pid>` is `/tmp/perf-<pid>.map` (where JVMs, node and CPython write it),
//! the pid coming from the dump's file name (`<prefix>.<pid>.<seq>.<kind>.heap`,
//! [`crate::series::parse_name`]); `--perf-map FILE` gives one for every dump instead. A map is
//! used only when nothing says it belongs to another process or another time:
//!
//! 1. **The pid**: the file is looked up by the dump's pid.
//! 2. **The process, if it still runs**: when `/proc/<pid>` exists, it is the dump's process only
//!    if it maps every executable file of the dump at the same address (address space layout
//!    randomization makes that a fingerprint). The dump's process: a map last written before it
//!    started was left by an earlier process with that pid, and is not used. Another process
//!    (the pid was reused): a map written since it started may be its own, and is not used.
//! 3. **The address space**: the dump's memory map must have anonymous executable memory (JIT
//!    code) holding at least one of the map's entries whole; a map none of whose entries fits
//!    comes from another address space, and is not used. Lookups check each entry the same way
//!    ([`crate::symbolize`]). A JVM's map (it names the `Interpreter` or Java methods) is used
//!    only for a dump whose process mapped `libjvm.so`.
//!
//! What these cannot catch: code freed and its memory reused for other code between the dump
//! and the writing of the map (a JVM's map lists the code alive when it is written, at exit with
//! `-XX:+DumpPerfMapAtExit`; Tally's agent's lists the code as it is compiled, so code reused
//! after the dump is named as reused). `perf` lives with the same limit.
//!
//! When the map is missing (or left by an earlier process) and the dump's process still runs and
//! is a JVM (it maps `libjvm.so`), the finder asks it for one, `jcmd <pid> Compiler.perfmap`,
//! and says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use crate::dump::{Dump, Mapping};
use crate::error::Error;
use crate::memory_map::MemoryMap;
use crate::object_file::io_message;
use crate::series;
use crate::symbolize::JitNames;
use tally_format::perf_map::PerfMap;

/// How long `jcmd` may take (attaching to a busy JVM takes a second or two).
const JCMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds, checks and caches the perf maps of a report's dumps.
pub struct Finder {
    /// `--perf-map FILE`, read.
    given: Option<(PathBuf, Rc<PerfMap>)>,
    /// What looking for `/tmp/perf-<pid>.map` found, per pid.
    by_pid: HashMap<u64, Found>,
}

enum Found {
    Map(PathBuf, Rc<PerfMap>),
    Nothing(String),
}

impl Finder {
    /// A finder; `given` is `--perf-map FILE`, read at once: a file that cannot be read, or
    /// whose every line is not `START SIZE NAME`, is an error.
    pub fn new(given: Option<&Path>, warn: &mut dyn FnMut(&str)) -> Result<Finder, Error> {
        let given = match given {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| Error::file(path, io_message(e)))?;
                let map = PerfMap::parse(&bytes);
                if map.entries().is_empty() && map.skipped > 0 {
                    return Err(Error::at(
                        path,
                        map.first_skipped.unwrap_or(1),
                        "not a perf map: no line is `START SIZE NAME` (hex addresses and sizes)",
                    ));
                }
                note_skipped(path, &map, warn);
                Some((path.to_path_buf(), Rc::new(map)))
            }
            None => None,
        };
        Ok(Finder {
            given,
            by_pid: HashMap::new(),
        })
    }

    /// What names the JIT code of `dump`, read from `dump_path` (module docs). Notes (a `jcmd`
    /// run, skipped lines) go to `warn`.
    pub fn names(&mut self, dump_path: &Path, dump: &Dump, warn: &mut dyn FnMut(&str)) -> JitNames {
        if !dump.maps.iter().any(is_jit_memory) {
            return JitNames::default();
        }
        if let Some((path, map)) = &self.given {
            return fit(path, map, dump, &how_to_get_one(None));
        }
        let Some(name) = series::parse_name(dump_path) else {
            return JitNames {
                map: None,
                hint: format!(
                    "{} has no pid in its name (<prefix>.<pid>.<seq>.<kind>.heap), so no \
                     /tmp/perf-<pid>.map was looked for; {}",
                    dump_path.display(),
                    how_to_get_one(None)
                ),
            };
        };
        let pid = name.pid;
        let found = self
            .by_pid
            .entry(pid)
            .or_insert_with(|| look_for(pid, dump, warn));
        match found {
            Found::Map(path, map) => fit(path, map, dump, &how_to_get_one(Some(pid))),
            Found::Nothing(reason) => JitNames {
                map: None,
                hint: format!("{reason}; {}", how_to_get_one(Some(pid))),
            },
        }
    }
}

/// Anonymous executable memory: where JIT code lies.
fn is_jit_memory(mapping: &Mapping) -> bool {
    mapping.path.is_empty() && mapping.is_executable()
}

/// The end of the hint: how to get a map.
fn how_to_get_one(pid: Option<u64>) -> String {
    let pid = pid.map_or_else(|| "<pid>".to_string(), |pid| pid.to_string());
    format!(
        "to name them, run the program under `tally run`, or start the JVM with \
         -agentpath:<target>/release/libtally_jvm.so (Tally's agent: it names inlined methods too) \
         or -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit (or run `jcmd {pid} \
         Compiler.perfmap` while it runs), node with --perf-basic-prof-only-functions, or give \
         --perf-map FILE"
    )
}

fn note_skipped(path: &Path, map: &PerfMap, warn: &mut dyn FnMut(&str)) {
    if map.skipped > 0 {
        warn(&format!(
            "{}: skipped {} line{} that are not `START SIZE NAME` (the first: line {})",
            path.display(),
            map.skipped,
            if map.skipped == 1 { "" } else { "s" },
            map.first_skipped.unwrap_or(0)
        ));
    }
}

/// `map` for `dump` if at least one of its entries lies whole in the dump's JIT memory, and, for
/// a JVM's map, the dump's process is a JVM (check 3).
fn fit(path: &Path, map: &Rc<PerfMap>, dump: &Dump, how: &str) -> JitNames {
    if map.is_jvm() && !dump.maps.iter().any(|m| m.path.ends_with("/libjvm.so")) {
        return JitNames {
            map: None,
            hint: format!(
                "{} is a JVM's map, but the dump's process maps no libjvm.so (another process's \
                 map?), so it was not used; {how}",
                path.display()
            ),
        };
    }
    let memory = MemoryMap::new(&dump.maps);
    let fits = map.entries().iter().any(|entry| {
        entry.start < entry.end
            && memory
                .jit_mapping(entry.start)
                .is_some_and(|m| entry.end <= m.end)
    });
    if fits {
        JitNames {
            map: Some(Rc::clone(map)),
            hint: format!(
                "{} has no entry for them (written before that code was compiled, or after it was \
                 freed); {how}",
                path.display()
            ),
        }
    } else {
        JitNames {
            map: None,
            hint: format!(
                "{} does not match the dump's memory map (none of its entries lies in the dump's \
                 anonymous executable memory: another process's map?), so it was not used; {how}",
                path.display()
            ),
        }
    }
}

/// Looks for `/tmp/perf-<pid>.map` for `dump` (checks 1 and 2), asking a running JVM for one.
fn look_for(pid: u64, dump: &Dump, warn: &mut dyn FnMut(&str)) -> Found {
    let path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    let live = LiveProcess::find(pid, dump);
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let mut reason = None;
    if let (Some(process), Some(written)) = (&live, written) {
        // `/proc` gives the start to the second at best (boot time in whole seconds).
        let slack = Duration::from_secs(1);
        match process.started {
            Some(started) if process.same && written + slack < started => {
                reason = Some(format!(
                    "{} is older than process {pid} (an earlier process with that pid left it)",
                    path.display()
                ));
            }
            Some(started) if !process.same && written + slack >= started => {
                return Found::Nothing(format!(
                    "pid {pid} now runs another process than the dump's, which may have written {}, \
                     so it was not used",
                    path.display()
                ));
            }
            _ => {}
        }
    }
    let usable = written.is_some() && reason.is_none();
    if !usable && live.as_ref().is_some_and(|p| p.same && p.jvm) {
        match ask_jvm(pid, &path) {
            Ok(()) => {
                warn(&format!(
                    "asked the running JVM (pid {pid}) for its perf map: jcmd {pid} Compiler.perfmap \
                     wrote {}",
                    path.display()
                ));
                reason = None;
            }
            Err(e) => {
                let why = reason.unwrap_or_else(|| format!("no perf map {}", path.display()));
                return Found::Nothing(format!("{why}, and `jcmd {pid} Compiler.perfmap` failed: {e}"));
            }
        }
    }
    if let Some(reason) = reason {
        return Found::Nothing(reason);
    }
    match std::fs::read(&path) {
        Ok(bytes) => {
            let map = PerfMap::parse(&bytes);
            note_skipped(&path, &map, warn);
            if map.entries().is_empty() {
                Found::Nothing(format!("{} has no entries", path.display()))
            } else {
                Found::Map(path, Rc::new(map))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Found::Nothing(format!("no perf map {}", path.display()))
        }
        Err(e) => Found::Nothing(format!("{}: {}", path.display(), io_message(e))),
    }
}

/// A process running now with the dump's pid.
struct LiveProcess {
    /// Whether it is the dump's process: it maps every executable file of the dump at the same
    /// address.
    same: bool,
    /// Whether it is a JVM (maps `libjvm.so`).
    jvm: bool,
    /// When it started, if `/proc` says.
    started: Option<SystemTime>,
}

impl LiveProcess {
    /// The process running now with pid `pid`; `None` if there is none, or if the dump maps no
    /// executable file to tell whether it is the dump's.
    fn find(pid: u64, dump: &Dump) -> Option<LiveProcess> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let live: Vec<(u64, u64, &str)> = maps.lines().filter_map(maps_line).collect();
        let files: Vec<&Mapping> = dump
            .maps
            .iter()
            .filter(|m| m.is_executable() && m.path.starts_with('/'))
            .collect();
        if files.is_empty() {
            // Nothing to compare the running process with: whether it is the dump's is unknown.
            return None;
        }
        let same = files.iter().all(|m| {
            live.iter()
                .any(|&(start, end, path)| start == m.start && end == m.end && path == m.path)
        });
        let jvm = live.iter().any(|(_, _, path)| path.ends_with("/libjvm.so"));
        Some(LiveProcess {
            same,
            jvm,
            started: start_time(pid),
        })
    }
}

/// Start, end and path of a `/proc/<pid>/maps` line (`start-end perms offset dev inode path`).
fn maps_line(line: &str) -> Option<(u64, u64, &str)> {
    let (range, mut rest) = line.split_once(' ')?;
    for _ in 0..4 {
        rest = rest.trim_start().split_once(' ').map_or("", |(_, r)| r);
    }
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    Some((start, end, rest.trim()))
}

/// When process `pid` started (see [`tally_format::perf_map::process_start`]).
fn start_time(pid: u64) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    tally_format::perf_map::process_start(&stat, &proc_stat, u64::try_from(ticks_per_second).ok()?)
}

/// Runs `jcmd <pid> Compiler.perfmap`, which makes the JVM write `/tmp/perf-<pid>.map`
/// (`path`).
fn ask_jvm(pid: u64, path: &Path) -> Result<(), String> {
    let asked = SystemTime::now() - Duration::from_secs(1);
    let mut child = Command::new("jcmd")
        .arg(pid.to_string())
        .arg("Compiler.perfmap")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("jcmd: {}", io_message(e)))?;
    let deadline = Instant::now() + JCMD_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer in {} s", JCMD_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(io_message(e)),
        }
    }
    let output = child.wait_with_output().map_err(io_message)?;
    // jcmd prints `<pid>:` and then the command's own output (`Command executed
    // successfully`, or what went wrong, not always with a failing exit code): success is a map
    // written since.
    let written = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if output.status.success() && written.is_some_and(|w| w >= asked) {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let said = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && *l != format!("{pid}:") && !l.starts_with("Command executed"));
    Err(said.map_or_else(
        || format!("it wrote no {} ({})", path.display(), output.status),
        str::to_string,
    ))
}
