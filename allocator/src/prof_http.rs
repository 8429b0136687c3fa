//! `prof_http:HOST:PORT`: the live heap and the statistics served over HTTP, the way Go's
//! `net/http/pprof` serves them, so that `go tool pprof`, Grafana Pyroscope (Alloy's
//! `pyroscope.scrape`) and Parca pull profiles from any process that preloads Tally, without a
//! handler of its own (issue 16; `docs/continuous-profiling.md`).
//!
//! One thread of Tally's own answers one connection at a time. It starts with the allocator: an
//! `.init_array` entry (run when the library is loaded: for a preloaded library, or a Rust
//! program linking the crate, before `main`) asks initialization to start it when complete (at
//! the first allocation, usually while the C library starts up), or starts it at once if
//! initialization is complete already. Initializing from the constructor instead would read the
//! options and install the fault handlers ahead of the program's own constructors.
//!
//! - `GET /debug/pprof/heap`: [`crate::pprof::live_heap`], gzipped `profile.proto`;
//! - `GET /debug/pprof/allocs`: the same profile, `alloc_space` shown first (with `prof_accum`);
//! - `GET /debug/pprof/`: a short index; `GET /debug/tally/stats`: the statistics as JSON.
//!
//! Safe by default: it listens only on loopback addresses unless `prof_http_remote:true`; any
//! other method is `405`, any other path `404`; a request is read for at most
//! [`REQUEST_TIME_MS`] and [`MAX_REQUEST_BYTES`] (then `408` or `431` and the connection is
//! closed), and a reply that the client does not take within [`REPLY_TIME_MS`] is dropped. The
//! thread runs with the profiler's guard set, so nothing it allocates is sampled; a profile is
//! made from the stack table without an allocator lock. What cannot be done (an address that
//! does not resolve or cannot be bound, a remote address not allowed) is one line on stderr, and
//! the program runs on. Requests themselves never print anything.
//!
//! A port in use at start is retried for [`BUSY_PORT_RETRY_MS`] before the line that says so
//! (a wrapper preloading Tally too may hold it until it `exec`s the program). After `fork` the
//! child closes its copy of the socket and starts a server of its own, which binds quietly once
//! the port is free (a daemon's parent exits; a worker's parent usually keeps it); a `fork`
//! made before the parent's server thread first tried its port waits for that try (at most a
//! second), so that the child's server cannot take the port first. `exec`
//! closes the socket (`SOCK_CLOEXEC`); the new program starts its own server.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::format;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::string::String;
use std::time::{Duration, Instant};
use std::vec::Vec;

use tally_pal as pal;

use crate::options::{self, STATS_JSON};
use crate::{init, pprof, prof_hooks, stats, thread};

/// Longest request (request line and headers) read; a longer one gets `431`.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Longest time a client may take to send its request; then `408`.
pub const REQUEST_TIME_MS: u64 = 5_000;
/// Longest time a client may take to read the reply.
pub const REPLY_TIME_MS: u64 = 10_000;

/// The process the server runs in (0: none), so it starts once per process.
static SERVING: AtomicU32 = AtomicU32::new(0);
/// The listening socket's descriptor (-1: none yet), and the connection being answered (-1:
/// none): a `fork` child closes its copies (see [`after_fork_in_child`]).
static LISTENER_FD: AtomicI32 = AtomicI32::new(-1);
static CONNECTION_FD: AtomicI32 = AtomicI32::new(-1);
/// Set in a `fork` child: its server binds quietly, retrying until the port is free.
static FORKED: AtomicBool = AtomicBool::new(false);
/// The process whose server has tried to bind its port once (bound it, found it in use, or
/// could not listen at all), 0 for none: `fork` waits for it ([`before_fork`]).
static FIRST_TRY: AtomicU32 = AtomicU32::new(0);

/// Longest a `fork` waits for the server's first try at its port ([`before_fork`]).
const FORK_WAIT_MS: u64 = 1_000;

/// How long a port in use is retried at start before the one line that says so: a wrapper
/// that preloads Tally too (a shell script, a launcher) may hold it for a moment before it
/// `exec`s the program, and its short-lived helpers give up quietly.
const BUSY_PORT_RETRY_MS: u64 = 2_000;

#[link_section = ".text.hot.tally"]
extern "C" fn start_at_load() {
    init::on_ready(start);
}

/// Has the server start with the allocator (see the module's documentation).
#[used]
#[link_section = ".init_array"]
static START_AT_LOAD: extern "C" fn() = start_at_load;

/// Starts the server thread if `prof_http` is set and it does not run in this process yet.
#[link_section = ".text.hot.tally"]
pub fn start() {
    let opts = init::options();
    if opts.prof_http().is_empty() {
        return;
    }
    let pid = pal::pid();
    let old = SERVING.load(Ordering::Relaxed);
    if old == pid
        || SERVING
            .compare_exchange(old, pid, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    if old == 0 {
        pal::process::on_fork(before_fork, nothing, after_fork_in_child);
    }
    if !pal::thread::spawn(serve_main) && !FORKED.load(Ordering::Relaxed) {
        pal::print(format_args!("tally: prof_http: cannot start its thread\n"));
    }
}

unsafe extern "C" fn nothing() {}

/// Before `fork`, in a process whose server thread has not yet tried to bind its port (it was
/// started at initialization, and a busy machine may not have run it yet): waits for that try,
/// at most [`FORK_WAIT_MS`]. Otherwise a program that forks a worker at once could lose its port
/// to the worker: the child's server binds as soon as the port is free, which it still was.
/// (This handler runs before the allocator's, which take its locks: the server thread can
/// allocate meanwhile.)
unsafe extern "C" fn before_fork() {
    let pid = pal::pid();
    if SERVING.load(Ordering::Relaxed) != pid {
        return;
    }
    let mut waited = 0;
    while FIRST_TRY.load(Ordering::Acquire) != pid && waited < FORK_WAIT_MS {
        pal::sleep_ms(1);
        waited += 1;
    }
}

/// Records that this process's server has tried its port once (see [`before_fork`]).
fn tried_the_port() {
    FIRST_TRY.store(pal::pid(), Ordering::Release);
}

/// In a `fork` child: the server thread did not come along, but its socket did. The copies are
/// closed (the parent keeps serving; a connection being answered is the parent's), and the
/// child gets a server of its own that binds once the port is free: for a daemon whose parent
/// exits at once, soon; for a worker of a server that forks, when the parent is gone. It says
/// nothing: the parent said what there was to say.
unsafe extern "C" fn after_fork_in_child() {
    for fd in [&LISTENER_FD, &CONNECTION_FD] {
        let fd = fd.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            pal::file::close(fd);
        }
    }
    FORKED.store(true, Ordering::Relaxed);
    start();
}

extern "C" fn serve_main(_: *mut c_void) -> *mut c_void {
    // Occasional requests need no thread cache: an idle server then holds no cache and no slabs.
    thread::go_without_cache();
    prof_hooks::unsampled(serve);
    core::ptr::null_mut()
}

/// Binds the address and answers connections, one at a time, for the life of the process.
fn serve() {
    let opts = init::options();
    let mut quiet = FORKED.load(Ordering::Relaxed);
    if !opts.prof && !quiet {
        pal::print(format_args!(
            "tally: prof_http: the heap profiler is off (add prof:true): /debug/pprof/heap answers 503\n"
        ));
    }
    while let Some(listener) = listen(opts.prof_http(), opts.prof_http_remote, quiet) {
        LISTENER_FD.store(listener.as_raw_fd(), Ordering::Relaxed);
        // Bound: said here, once the descriptor is stored, so that a child forked from now on
        // closes its copy (a refused bind is said in `listen`, before its retries).
        tried_the_port();
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    CONNECTION_FD.store(stream.as_raw_fd(), Ordering::Relaxed);
                    answer(stream);
                    CONNECTION_FD.store(-1, Ordering::Relaxed);
                }
                // The program closed the descriptor under us (a daemon closing every descriptor
                // after `fork`): the number may be the program's own by now, so it is not closed
                // again, and the server listens anew, quietly.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL)
                    ) =>
                {
                    LISTENER_FD.store(-1, Ordering::Relaxed);
                    core::mem::forget(listener);
                    quiet = true;
                    break;
                }
                // Out of descriptors, or the like: wait a little rather than spin.
                Err(_) => pal::sleep_ms(100),
            }
        }
    }
    tried_the_port();
}

/// The listening socket for `address` (`HOST:PORT`, checked when the options were read), or
/// `None` after one line saying why not (none when `quiet`). A port in use is retried: for
/// [`BUSY_PORT_RETRY_MS`], or, `quiet`, until it is free.
fn listen(address: &[u8], remote: bool, quiet: bool) -> Option<TcpListener> {
    let text = String::from_utf8_lossy(address);
    let fail = |why: core::fmt::Arguments<'_>| {
        if !quiet {
            pal::print(format_args!("tally: prof_http: {why}; not serving\n"));
        }
        None
    };
    let (host, port) = options::host_and_port(address)?;
    let addresses: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(found) => found.collect(),
        Err(e) => return fail(format_args!("cannot resolve {host}: {e}")),
    };
    if addresses.is_empty() {
        return fail(format_args!("{host} has no address"));
    }
    if !remote {
        if let Some(other) = addresses.iter().find(|a| !a.ip().is_loopback()) {
            return fail(format_args!(
                "{text} is not a loopback address ({}); add prof_http_remote:true to serve other hosts",
                other.ip()
            ));
        }
    }
    let started = Instant::now();
    loop {
        let bound = TcpListener::bind(&addresses[..]);
        if bound.is_err() {
            // In use (retried below) or refused: either way the port was tried.
            tried_the_port();
        }
        match bound {
            Ok(listener) => return Some(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && (quiet || started.elapsed() < Duration::from_millis(BUSY_PORT_RETRY_MS)) =>
            {
                pal::sleep_ms(if quiet { 1000 } else { 100 });
            }
            Err(e) => return fail(format_args!("cannot listen on {text}: {e}")),
        }
    }
}

/// A reply: status, content type, body.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    /// An `Allow` header (for `405`).
    allow: bool,
}

impl Reply {
    fn text(status: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: false,
        }
    }
}

/// Reads one request from `stream`, within the bounds, and answers it; the connection is then
/// closed.
fn answer(mut stream: TcpStream) {
    let reply = match read_request(&mut stream) {
        Ok(head) => route(&head),
        Err(reply) => reply,
    };
    let Some(reply) = reply else { return };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len(),
        if reply.allow { "Allow: GET\r\n" } else { "" },
    );
    let started = Instant::now();
    let limit = Duration::from_millis(REPLY_TIME_MS);
    for piece in [head.as_bytes()]
        .into_iter()
        .chain(reply.body.chunks(REPLY_PIECE))
    {
        // The time limit is for the whole reply: a client reading slowly cannot hold the one
        // connection longer.
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() || stream.write_all(piece).is_err()
        {
            return;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Bytes written between checks of the reply's time limit.
const REPLY_PIECE: usize = 16 * 1024;

/// The request's head (request line and headers, up to the blank line), or the reply that ends
/// the connection early (`None`: close without one: the client sent nothing).
fn read_request(stream: &mut TcpStream) -> Result<Vec<u8>, Option<Reply>> {
    let started = Instant::now();
    let limit = Duration::from_millis(REQUEST_TIME_MS);
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(Some(Reply::text(
                "408 Request Timeout",
                "request not complete in time\n",
            )));
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Some(Reply::text(
                    "408 Request Timeout",
                    "request not complete in time\n",
                )));
            }
            Err(_) => return Err(None),
        };
        let seen = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&head[seen..], b"\r\n\r\n") {
            head.truncate(seen + end);
            return Ok(head);
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Err(Some(Reply::text(
                "431 Request Header Fields Too Large",
                "request too large\n",
            )));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The reply to a request whose head is `head`.
fn route(head: &[u8]) -> Option<Reply> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or(b"");
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Some(Reply::text("400 Bad Request", "malformed request line\n"));
    };
    if parts.next().is_some() || !version.starts_with(b"HTTP/1.") {
        return Some(Reply::text("400 Bad Request", "malformed request line\n"));
    }
    if method != b"GET" {
        let mut reply = Reply::text("405 Method Not Allowed", "only GET is served\n");
        reply.allow = true;
        return Some(reply);
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or(b"");
    Some(match path {
        b"/debug/pprof/heap" | b"/debug/pprof/allocs" => heap(path == b"/debug/pprof/allocs"),
        b"/debug/pprof/" | b"/debug/pprof" => Reply {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            body: INDEX.as_bytes().to_vec(),
            allow: false,
        },
        b"/debug/tally/stats" => {
            let mut body = Vec::new();
            // Each piece ends with a NUL (the C callback's convention): leave it out.
            stats::print_to(STATS_JSON, &mut |piece| {
                body.extend_from_slice(&piece[..piece.len().saturating_sub(1)])
            });
            Reply {
                status: "200 OK",
                content_type: "application/json",
                body,
                allow: false,
            }
        }
        _ => Reply::text("404 Not Found", "not found; see /debug/pprof/\n"),
    })
}

fn heap(allocs: bool) -> Reply {
    if !prof_hooks::profiler_on() {
        return Reply::text(
            "503 Service Unavailable",
            "the heap profiler is off: start the program with TALLY_CONF=prof:true\n",
        );
    }
    Reply {
        status: "200 OK",
        content_type: "application/octet-stream",
        body: pprof::live_heap(allocs),
        allow: false,
    }
}

const INDEX: &str = "<html><head><title>Tally: /debug/pprof/</title></head><body>
<p>Profiles of this process, served by Tally (<code>prof_http</code>):</p>
<ul>
<li><a href=\"heap\">heap</a>: the live sampled heap (gzipped pprof; <code>go tool pprof URL</code>)</li>
<li><a href=\"allocs\">allocs</a>: the same profile, allocated bytes shown first (with <code>prof_accum:true</code>)</li>
<li><a href=\"../tally/stats\">/debug/tally/stats</a>: the allocator's statistics (JSON)</li>
</ul>
</body></html>
";
