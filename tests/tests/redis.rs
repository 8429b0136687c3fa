//! Redis under Tally: Debian's `redis-server`, linked against `libjemalloc.so.2`, asks its
//! allocator for statistics through jemalloc's API, and with `libtally.so` preloaded every answer
//! must be Tally's.
//!
//! redis calls `mallctl("epoch")`, then `mallctl("stats.allocated")`, `"stats.active"` and
//! `"stats.resident"` for `INFO memory`; `mallctl("arenas.narenas")`, then
//! `mallctl("arena.<narenas>.purge")` for `MEMORY PURGE`; `malloc_stats_print` for `MEMORY
//! MALLOC-STATS`; it writes `mallctl("background_thread")` at start-up and for `CONFIG SET
//! jemalloc-bg-thread`. Before Tally exported `mallctl`, those calls bound to jemalloc's, which served
//! no allocation in the process and reported its idle heap (`allocator_allocated:28672` with
//! 38 MB of keys stored).
//!
//! Each test starts the server (127.0.0.1, a free port, no persistence, no `TALLY_CONF`), stores
//! 200,000 keys with 100-byte values (36.5 MiB in redis's own count, `used_memory`) and talks to
//! it in RESP over a TCP socket, with a client written here (not `redis-cli`). They show:
//!
//! - `INFO memory`'s allocator figures are Tally's: `allocator_allocated` is far above an idle
//!   heap and within 5% of `used_memory`; `allocated`, `active` and `resident` are within 5% of
//!   those of Tally's report, which is what `MEMORY MALLOC-STATS` returns (not jemalloc's text);
//!   `allocator_resident` is within a few MiB of the anonymous part of the process's RSS.
//! - redis's writes of `background_thread` start and stop Tally's background thread, and `MEMORY
//!   PURGE`, after `FLUSHALL ASYNC` freed the keys, gives Tally's free pages back to the kernel.
//! - The server serves on and ends with status 0 at `SHUTDOWN NOSAVE`.
//!
//! The `INFO memory` session runs first without the preload, on jemalloc: every check that holds
//! for any allocator must pass there too, or the test, not Tally, is wrong. Every wait is bounded:
//! a server that does not start, answer or exit in time fails the test with its log, and a
//! failing test kills its server.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_tests::{describe_status, libtally_so, require_tool, ScratchDir, StatsLine, STATS_PREFIX};

/// Keys stored: `key:0` to `key:199999`.
const KEYS: usize = 200_000;

/// Bytes of each value.
const VALUE_BYTES: usize = 100;

/// SETs sent before their replies are read.
const BATCH: usize = 2_000;

/// How long the server may take to answer its first PING.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long one reply (or one write) may take; a batch of SETs takes milliseconds.
const IO_LIMIT: Duration = Duration::from_secs(30);

/// How long redis's cron may take to sample its memory after the last write (it samples every
/// 100 ms).
const SAMPLE_LIMIT: Duration = Duration::from_secs(10);

/// How far apart `used_memory` now and when redis sampled it may be for the sample to count as of
/// now: the connection's buffers come and go between commands, a few KiB.
const SAMPLE_SLACK: u64 = 256 << 10;

/// How long the server may take to exit after `SHUTDOWN NOSAVE`.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// What jemalloc's `malloc_stats_print` text starts with.
const JEMALLOC_STATS_START: &str = "___ Begin jemalloc statistics ___";

/// `allocator_allocated` must exceed this: the keys take about 38 MB, jemalloc's idle heap (the
/// bug) 28,672 bytes.
const STORED_AT_LEAST: u64 = 20 << 20;

/// How far apart two counts of the same live bytes may be, in percent of the larger.
const SAME_BYTES_PERCENT: u64 = 5;

/// How far `allocator_resident` may fall under the process's anonymous resident bytes (see
/// `check_info_memory`).
const RESIDENT_UNDER: u64 = 4 << 20;

/// How far `allocator_resident` may exceed the process's anonymous resident bytes.
const RESIDENT_OVER: u64 = 8 << 20;

/// Whether the server runs on jemalloc, as built, or on Tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Allocator {
    /// No preload: jemalloc, which redis is linked against.
    Jemalloc,
    /// `LD_PRELOAD=libtally.so`, no `TALLY_CONF`.
    Tally,
}

/// A running `redis-server`, killed on drop unless it exited (so a failing test leaves no server).
struct Server {
    child: Child,
    port: u16,
    /// Its stdout and stderr (redis logs to stdout).
    log: PathBuf,
    allocator: Allocator,
}

impl Server {
    /// Starts `redis-server` on 127.0.0.1 and a free port, working in `scratch`, without saving
    /// anything, and waits until it answers PING.
    fn start(scratch: &ScratchDir, allocator: Allocator) -> Server {
        let redis = require_tool("redis-server", "redis-server");
        let dir = scratch.subdir(match allocator {
            Allocator::Jemalloc => "jemalloc",
            Allocator::Tally => "tally",
        });
        let log = dir.join("redis.log");
        let output = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let port = free_port();
        let mut cmd = Command::new(redis);
        cmd.current_dir(&dir)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("duplicate the log file"))
            .stderr(output);
        for var in ["LD_PRELOAD", "TALLY_CONF", "MALLOC_CONF"] {
            cmd.env_remove(var);
        }
        if allocator == Allocator::Tally {
            cmd.env("LD_PRELOAD", libtally_so());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        let mut server = Server {
            child,
            port,
            log,
            allocator,
        };
        server.wait_until_it_answers();
        server
    }

    /// Polls with PING until `+PONG`; panics with the log if the server exits or `START_LIMIT`
    /// passes first.
    fn wait_until_it_answers(&mut self) {
        let start = Instant::now();
        let mut last = String::from("no attempt");
        while start.elapsed() < START_LIMIT {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{}",
                    self.failure(&format!("exited at start ({})", describe_status(status)))
                );
            }
            match Connection::open(self.port).and_then(|mut c| c.call_raw(&["PING"])) {
                Ok(Reply::Simple(pong)) if pong == "PONG" => return,
                Ok(reply) => last = format!("PING answered {reply:?}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{}",
            self.failure(&format!(
                "did not answer PING on port {} within {START_LIMIT:?} (last: {last})",
                self.port
            ))
        );
    }

    /// A connection to the server.
    fn connect(&self) -> Connection {
        Connection::open(self.port).unwrap_or_else(|e| panic!("{}", self.failure(&format!("connect: {e}"))))
    }

    /// The sum of the `/proc/<pid>/status` lines `keys` (`RssAnon:` and the like), in bytes.
    fn status_bytes(&self, keys: &[&str]) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key)?.trim().strip_suffix("kB"))
                .and_then(|kib| kib.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no `{key} N kB` line in {path}:\n{status}"))
        };
        keys.iter().map(|key| kib(key) * 1024).sum()
    }

    /// The server's resident bytes that map files: its code and that of its libraries (and shared
    /// memory, of which it has none).
    fn file_resident(&self) -> u64 {
        self.status_bytes(&["RssFile:", "RssShmem:"])
    }

    /// The server's anonymous resident bytes: its heap, stacks and written library data.
    fn anonymous_resident(&self) -> u64 {
        self.status_bytes(&["RssAnon:"])
    }

    /// Sends `SHUTDOWN NOSAVE` and waits for the server to exit with status 0.
    fn shut_down(mut self, connection: &mut Connection) {
        // The server closes the connection without a reply when it shuts down.
        if let Ok(reply) = connection.call_raw(&["SHUTDOWN", "NOSAVE"]) {
            panic!("{}", self.failure(&format!("SHUTDOWN NOSAVE answered {reply:?}")));
        }
        let start = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() < EXIT_LIMIT => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => panic!(
                    "{}",
                    self.failure(&format!("still running {EXIT_LIMIT:?} after SHUTDOWN NOSAVE"))
                ),
                Err(e) => panic!("waiting for redis-server: {e}"),
            }
        };
        assert!(
            status.success(),
            "{}",
            self.failure(&format!(
                "exited after SHUTDOWN NOSAVE with {}",
                describe_status(status)
            ))
        );
    }

    /// A failure message: what happened, then the end of the server's log.
    fn failure(&self, what: &str) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(start);
        format!(
            "redis-server on {:?} {what}\n--- its log ({}):\n{}",
            self.allocator,
            self.log.display(),
            &log[start..]
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback port nobody listens on: the one the kernel picks for a listener on port 0, which
/// is closed again (another process could take it in between; then the server fails to start,
/// and says so in its log).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback listener");
    listener.local_addr().expect("listener address").port()
}

/// One RESP reply, of the kinds the commands here return.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// `+text`
    Simple(String),
    /// `-text`
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$n` and n bytes, or `$-1` (none).
    Bulk(Option<Vec<u8>>),
}

/// A RESP connection: commands go out as arrays of bulk strings; every read and write is bounded
/// by `IO_LIMIT`.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(port: u16) -> io::Result<Connection> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&address, IO_LIMIT)?;
        stream.set_read_timeout(Some(IO_LIMIT))?;
        stream.set_write_timeout(Some(IO_LIMIT))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Writes commands [`encode`]d into `bytes` in one go (a pipeline); their replies are left
    /// to [`read_reply`].
    ///
    /// [`read_reply`]: Connection::read_reply
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// One command and its reply, or the I/O error that stopped them.
    fn call_raw(&mut self, command: &[&str]) -> io::Result<Reply> {
        let mut out = Vec::new();
        encode(&mut out, command);
        self.send(&out)?;
        self.read_reply()
    }

    /// One command and its reply.
    fn call(&mut self, command: &[&str]) -> Reply {
        self.call_raw(command)
            .unwrap_or_else(|e| panic!("redis command {command:?}: {e}"))
    }

    /// The reply to `command`, which must be a bulk string.
    fn call_bulk(&mut self, command: &[&str]) -> String {
        match self.call(command) {
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            reply => panic!("redis command {command:?} answered {reply:?}, not a bulk string"),
        }
    }

    /// The next reply; an error if the connection closes or the bytes are not RESP.
    fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1);
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| invalid(format!("bad number in RESP line {line:?}")))
        };
        match kind {
            "+" => Ok(Reply::Simple(rest.to_owned())),
            "-" => Ok(Reply::Error(rest.to_owned())),
            ":" => Ok(Reply::Integer(number()?)),
            "$" => match usize::try_from(number()?) {
                Err(_) => Ok(Reply::Bulk(None)),
                Ok(len) => {
                    let mut bytes = vec![0; len + 2];
                    self.reader.read_exact(&mut bytes)?;
                    if !bytes.ends_with(b"\r\n") {
                        return Err(invalid(format!("bulk string of {len} bytes not ended by CRLF")));
                    }
                    bytes.truncate(len);
                    Ok(Reply::Bulk(Some(bytes)))
                }
            },
            _ => Err(invalid(format!("unexpected RESP line {line:?}"))),
        }
    }

    /// One CRLF-terminated line, without the CRLF.
    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        match line.strip_suffix("\r\n") {
            Some(text) if !text.is_empty() => Ok(text.to_owned()),
            _ => Err(invalid(format!("RESP line {line:?} not ended by CRLF"))),
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Appends `command` to `out` as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, command: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
    for arg in command {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The value stored under `key:<i>`: `i` in decimal, zero-padded to [`VALUE_BYTES`].
fn value(i: usize) -> String {
    format!("{i:0>VALUE_BYTES$}")
}

/// Stores [`KEYS`] keys with pipelined SETs and checks DBSIZE and two of the values.
fn store_keys(connection: &mut Connection) {
    for first in (0..KEYS).step_by(BATCH) {
        let batch = first..KEYS.min(first + BATCH);
        let mut out = Vec::new();
        for i in batch.clone() {
            encode(&mut out, &["SET", &format!("key:{i}"), &value(i)]);
        }
        connection
            .send(&out)
            .unwrap_or_else(|e| panic!("sending SETs of keys {batch:?}: {e}"));
        for i in batch {
            let reply = connection.read_reply();
            assert!(
                matches!(&reply, Ok(Reply::Simple(ok)) if ok == "OK"),
                "SET key:{i} answered {reply:?}"
            );
        }
    }
    assert_eq!(connection.call(&["DBSIZE"]), Reply::Integer(KEYS as i64));
    for i in [0, KEYS - 1] {
        assert_eq!(
            connection.call(&["GET", &format!("key:{i}")]),
            Reply::Bulk(Some(value(i).into_bytes()))
        );
    }
}

/// The fields of `INFO memory` this test reads.
///
/// All but `used_memory` come from one sample redis's cron takes every 100 ms (`serverCron`,
/// `cronUpdateMemoryStats`): the process's RSS, redis's count of its bytes, then the allocator's
/// three figures. If the allocator's `mallctl` gives 0 for one of those, redis makes one up
/// (allocated from its own count, resident from the RSS, active from resident).
#[derive(Debug)]
struct MemoryInfo {
    /// What redis counts it allocated now (usable sizes of its own blocks).
    used_memory: u64,
    /// `used_memory` when the sample was taken; INFO shows it only as `used_memory_rss` minus
    /// `mem_fragmentation_bytes`.
    sampled_used_memory: u64,
    /// The process's resident bytes, from `/proc/<pid>/stat`.
    used_memory_rss: u64,
    /// `mallctl("stats.allocated")`.
    allocator_allocated: u64,
    /// `mallctl("stats.active")`.
    allocator_active: u64,
    /// `mallctl("stats.resident")`.
    allocator_resident: u64,
    /// The allocator redis was built with.
    mem_allocator: String,
}

impl MemoryInfo {
    fn read(connection: &mut Connection) -> MemoryInfo {
        let text = connection.call_bulk(&["INFO", "memory"]);
        let field = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("no `{key}:` in INFO memory:\n{text}"))
                .to_owned()
        };
        let number = |key: &str| {
            let value = field(key);
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("INFO memory's `{key}:{value}` is not a byte count:\n{text}"))
        };
        let used_memory_rss = number("used_memory_rss");
        MemoryInfo {
            used_memory: number("used_memory"),
            // A size_t difference, printed with %zu: wrapped if redis counted more than the RSS.
            sampled_used_memory: used_memory_rss.wrapping_sub(number("mem_fragmentation_bytes")),
            used_memory_rss,
            allocator_allocated: number("allocator_allocated"),
            allocator_active: number("allocator_active"),
            allocator_resident: number("allocator_resident"),
            mem_allocator: field("mem_allocator"),
        }
    }

    /// `INFO memory` once its sample is of now: taken after the last write, and after the
    /// dictionary's incremental rehash, which the cron finishes, freed the old table (1 MiB at
    /// 200,000 keys). Polls until the sampled `used_memory` is within `SAMPLE_SLACK` of the
    /// current one, for at most `SAMPLE_LIMIT`.
    fn read_fresh(connection: &mut Connection) -> MemoryInfo {
        let start = Instant::now();
        loop {
            let info = MemoryInfo::read(connection);
            if info.sampled_used_memory.abs_diff(info.used_memory) <= SAMPLE_SLACK {
                return info;
            }
            assert!(
                start.elapsed() < SAMPLE_LIMIT,
                "redis's memory sample is still not of now after {SAMPLE_LIMIT:?}: {info:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `a` and `b` are within `percent` of the larger of them.
fn close(a: u64, b: u64, percent: u64) -> bool {
    a.abs_diff(b) * 100 <= a.max(b) * percent
}

/// Bytes in MiB, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Checks `INFO memory` after the keys were stored, on either allocator; returns it.
fn check_info_memory(server: &Server, connection: &mut Connection) -> MemoryInfo {
    let info = MemoryInfo::read_fresh(connection);
    // Code pages stay resident once run, so this is (nearly) what they were at the sample.
    let files = server.file_resident();
    let anonymous = info.used_memory_rss.saturating_sub(files);
    eprintln!(
        "redis on {:?}: used_memory {}, allocator_allocated {}, active {}, resident {}; \
         used_memory_rss {} of which files {}, anonymous {}",
        server.allocator,
        mib(info.used_memory),
        mib(info.allocator_allocated),
        mib(info.allocator_active),
        mib(info.allocator_resident),
        mib(info.used_memory_rss),
        mib(files),
        mib(anonymous),
    );
    let context = format!("{info:?}, resident file pages {files}");
    // redis is built with jemalloc and says so whatever serves its blocks.
    assert!(info.mem_allocator.starts_with("jemalloc"), "{context}");
    assert!(
        info.allocator_allocated > STORED_AT_LEAST,
        "allocator_allocated is {} with {KEYS} keys of {VALUE_BYTES} bytes stored: the allocator \
         statistics are not of the allocator serving redis: {context}",
        info.allocator_allocated
    );
    // Both count usable sizes of live blocks: redis its own (zmalloc asks malloc_usable_size),
    // the allocator every block, including the few redis does not count (Lua's, libc's).
    assert!(
        close(info.allocator_allocated, info.used_memory, SAME_BYTES_PERCENT),
        "allocator_allocated and used_memory differ by more than {SAME_BYTES_PERCENT}%: {context}"
    );
    assert!(
        info.allocator_allocated <= info.allocator_active && info.allocator_active <= info.allocator_resident,
        "want allocated <= active <= resident: {context}"
    );
    // The heap's resident pages are the anonymous part of the RSS (taken in the same sample),
    // less thread stacks and the written data of redis and its libraries: 2.7 MiB of anonymous
    // pages in all with an idle heap, on either allocator; Tally's resident figure is 0.6 MiB
    // under the anonymous bytes here. An allocator's resident figure is an estimate, which may
    // count pages nobody touched: jemalloc's idle heap counts 4.3 MiB for those 2.7, and with
    // the keys stored 1.6 MiB (once in ten runs 3.6) over the anonymous bytes. So the figure may
    // be a few MiB under, or somewhat more over, whatever the heap's size; never off by the
    // whole heap, as the statistics of an idle jemalloc are. Not the whole RSS: it also holds
    // the code of redis, libcrypto and libc (9-10 MiB resident).
    assert!(
        anonymous <= info.allocator_resident + RESIDENT_UNDER
            && info.allocator_resident <= anonymous + RESIDENT_OVER,
        "allocator_resident is not within {} under or {} over the anonymous part of used_memory_rss: \
         {context}",
        mib(RESIDENT_UNDER),
        mib(RESIDENT_OVER)
    );
    info
}

/// Tally's report, as `MEMORY MALLOC-STATS` returns it, and its first line (the `key=value` one).
fn tallys_report(connection: &mut Connection) -> (String, StatsLine) {
    let report = connection.call_bulk(&["MEMORY", "MALLOC-STATS"]);
    let head = &report[..report.len().min(2000)];
    assert!(
        !report.starts_with(JEMALLOC_STATS_START),
        "MEMORY MALLOC-STATS printed jemalloc's statistics, not Tally's:\n{head}"
    );
    let line = report
        .lines()
        .find_map(StatsLine::parse)
        .unwrap_or_else(|| panic!("no `{STATS_PREFIX}` line in MEMORY MALLOC-STATS:\n{head}"));
    (report, line)
}

/// The value of `key` in Tally's stats line.
fn stat(line: &StatsLine, key: &str) -> u64 {
    line.get_u64(key)
        .unwrap_or_else(|| panic!("no decimal `{key}=` in {:?}", line.raw))
}

/// A server on `allocator` holding the keys of [`store_keys`], and a connection to it.
fn loaded_server(scratch: &ScratchDir, allocator: Allocator) -> (Server, Connection) {
    let server = Server::start(scratch, allocator);
    let mut connection = server.connect();
    store_keys(&mut connection);
    (server, connection)
}

/// `INFO memory` of redis under Tally reports Tally's statistics: `allocator_allocated`,
/// `allocator_active` and `allocator_resident` are those of Tally's report, which is what
/// `MEMORY MALLOC-STATS` prints, and agree with redis's own count of its bytes and the kernel's
/// count of the process's pages. The same session on jemalloc, without the preload, checks the
/// test: its figures must pass the same checks, and its MALLOC-STATS be jemalloc's text.
#[test]
fn redis_info_memory_reports_tallys_statistics() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "redis-info");
    for allocator in [Allocator::Jemalloc, Allocator::Tally] {
        let (server, mut connection) = loaded_server(&scratch, allocator);
        let info = check_info_memory(&server, &mut connection);
        if allocator == Allocator::Jemalloc {
            let text = connection.call_bulk(&["MEMORY", "MALLOC-STATS"]);
            assert!(
                text.starts_with(JEMALLOC_STATS_START),
                "redis without the preload did not print jemalloc's statistics:\n{}",
                &text[..text.len().min(2000)]
            );
        } else {
            // Read right after INFO's sample: the same blocks and pages, but for a few
            // connection buffers (and pages the decay gave back in between: not at this rate).
            let (_, line) = tallys_report(&mut connection);
            eprintln!("redis on Tally: MEMORY MALLOC-STATS: {}", line.raw);
            for (key, figure, in_info) in [
                ("allocated", "allocator_allocated", info.allocator_allocated),
                ("active", "allocator_active", info.allocator_active),
                ("resident", "allocator_resident", info.allocator_resident),
            ] {
                let in_report = stat(&line, key);
                assert!(
                    close(in_info, in_report, SAME_BYTES_PERCENT),
                    "INFO memory's {figure}:{in_info} and Tally's {key}={in_report} differ by more \
                     than {SAME_BYTES_PERCENT}%:\n{}",
                    line.raw
                );
            }
        }
        server.shut_down(&mut connection);
    }
}

/// Polls `INFO memory` until no lazily freed object is left to free, for at most
/// `SAMPLE_LIMIT`.
fn wait_for_lazy_frees(connection: &mut Connection) {
    let start = Instant::now();
    loop {
        let text = connection.call_bulk(&["INFO", "memory"]);
        if text.lines().any(|line| line == "lazyfree_pending_objects:0") {
            return;
        }
        assert!(
            start.elapsed() < SAMPLE_LIMIT,
            "FLUSHALL ASYNC has not freed the keys after {SAMPLE_LIMIT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that Tally's background thread is `state` ("running" or "off"), as its report says.
fn assert_background_thread(connection: &mut Connection, state: &str, why: &str) {
    let (report, _) = tallys_report(connection);
    assert!(
        report.contains(&format!("; background thread: {state}\n")),
        "{why}: Tally's background thread is not {state}:\n{}",
        &report[..report.len().min(2000)]
    );
}

/// redis's other calls into jemalloc's API reach Tally: its write of `background_thread` at
/// start-up starts Tally's background thread (off by default) and `CONFIG SET jemalloc-bg-thread
/// no` stops it; `MEMORY PURGE` answers `+OK` having given Tally's free pages back to the kernel
/// (jemalloc's `mallctl`, which answered before Tally had one, said OK too). The server serves
/// on, and shuts down with status 0.
#[test]
fn redis_memory_purge_and_background_thread_control_tally() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "redis-purge");
    let server = Server::start(&scratch, Allocator::Tally);
    let mut connection = server.connect();
    assert_background_thread(
        &mut connection,
        "running",
        "redis's mallctl(\"background_thread\", true) at start-up",
    );
    // Stopped, so that the pages the keys leave free wait for the purge (dirty_decay_ms is 10 s).
    assert_eq!(
        connection.call(&["CONFIG", "SET", "jemalloc-bg-thread", "no"]),
        Reply::Simple("OK".into())
    );
    assert_background_thread(
        &mut connection,
        "off",
        "redis's mallctl(\"background_thread\", false) for CONFIG SET jemalloc-bg-thread no",
    );
    store_keys(&mut connection);
    // ASYNC: FLUSHALL SYNC would purge itself (redis calls its purge after a synchronous flush).
    assert_eq!(
        connection.call(&["FLUSHALL", "ASYNC"]),
        Reply::Simple("OK".into())
    );
    wait_for_lazy_frees(&mut connection);
    assert_eq!(connection.call(&["DBSIZE"]), Reply::Integer(0));
    let (_, before) = tallys_report(&mut connection);
    let free_before = stat(&before, "dirty") + stat(&before, "muzzy");
    let anonymous_before = server.anonymous_resident();
    assert!(
        free_before >= STORED_AT_LEAST / 2,
        "the test's premise: the freed keys leave at least {} of free pages for the purge, \
         not {}:\n{}",
        mib(STORED_AT_LEAST / 2),
        mib(free_before),
        before.raw
    );
    assert_eq!(
        connection.call(&["MEMORY", "PURGE"]),
        Reply::Simple("OK".into()),
        "MEMORY PURGE failed: mallctl(\"arenas.narenas\") or mallctl(\"arena.<narenas>.purge\") \
         was refused"
    );
    let (_, after) = tallys_report(&mut connection);
    let free_after = stat(&after, "dirty") + stat(&after, "muzzy");
    let anonymous_after = server.anonymous_resident();
    eprintln!(
        "redis on Tally: MEMORY PURGE: free pages {} -> {}, RssAnon {} -> {}",
        mib(free_before),
        mib(free_after),
        mib(anonymous_before),
        mib(anonymous_after)
    );
    // The commands since the purge may have emptied a page or two.
    assert!(
        free_after <= 1 << 20,
        "MEMORY PURGE left {} of Tally's free pages:\nbefore: {}\nafter: {}",
        mib(free_after),
        before.raw,
        after.raw
    );
    // The pages went back to the kernel (MADV_DONTNEED), not only out of Tally's counts.
    assert!(
        anonymous_after + free_before / 2 <= anonymous_before,
        "MEMORY PURGE gave back {} of free pages but RssAnon went from {} only to {}",
        mib(free_before),
        mib(anonymous_before),
        mib(anonymous_after)
    );
    assert_eq!(connection.call(&["PING"]), Reply::Simple("PONG".into()));
    server.shut_down(&mut connection);
}
