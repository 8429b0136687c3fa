//! `prof_http:HOST:PORT`: a preloaded C program serves its live heap over HTTP, and the real
//! client, `go tool pprof` (Debian's `golang-go`), fetches it by URL.
//!
//! - `tests/programs/http_leak.c` keeps 16 MiB from `leak_records` (and 256 KiB from
//!   `keep_a_little`) under `prof:true,lg_prof_sample:14,prof_http:127.0.0.1:PORT`: `go tool
//!   pprof -top URL` ranks `leak_records` first with 16 MiB within 15%, names the functions
//!   (filled in the process: no `malloc` frame, the stack starts at the leaking function), and
//!   shows nothing the server thread allocated for the profiles it made before (with
//!   `prof_accum`, not even among what was allocated and freed); `/debug/pprof/allocs` is the
//!   same profile with `alloc_space` shown first;
//!   after the program leaks 16 MiB more, a second fetch with `-diff_base` (the first fetch's
//!   saved file) shows `leak_records` grown by 16 MiB within 15%.
//! - Hostile requests: an unknown path (404), a POST (405 with `Allow: GET`), a request line
//!   that is not HTTP (400), a 1 MB header (431 or the connection closed), a connection that
//!   never sends (closed, and the next client served after it); the program's own output stays
//!   exactly what it prints alone, its stderr empty, and the server still answers after all
//!   that.
//! - Processes: a daemon (the parent exits at once after `fork`) serves from the child, which
//!   binds once the parent has let the port go; a server that forks a worker keeps serving its
//!   own heap, and the worker stays quiet; a program that takes SIGUSR1 from a `signalfd` still
//!   gets it (Tally's thread blocks the signals sent to the process; shown to fail without).
//! - A non-loopback address is refused with one line unless `prof_http_remote:true`; a port in
//!   use (after 2 s of retries: a port held for a moment is taken quietly once free) is one line
//!   and the program runs on; without `prof:true` the heap answers 503, the
//!   statistics 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally_tests::{compile_c, go_tool_pprof, libtally_so, require_tool, ScratchDir};

/// What the program prints on stdout when it runs alone, for `inputs` lines of input.
fn expected_stdout(inputs: usize) -> String {
    let mut s = String::from("ready\n");
    for _ in 0..inputs {
        s.push_str("more\n");
    }
    s
}

/// A port nothing listens on now (bound to port 0, then let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The leaking program, running preloaded with `conf`.
struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Program {
    fn start(exe: &Path, conf: &str) -> Program {
        Program::start_with(exe, &[], conf)
    }

    fn start_with(exe: &Path, args: &[&str], conf: &str) -> Program {
        let mut child = Command::new(exe)
            .args(args)
            .env("LD_PRELOAD", libtally_so())
            .env("TALLY_CONF", conf)
            .env_remove("MALLOC_CONF")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Program {
            stdin: child.stdin.take(),
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Waits for the next line of stdout, which must be `expected`.
    fn expect_line(&mut self, expected: &str) {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the program did not print {expected:?}"));
        assert_eq!(line, expected);
        self.stdout.push(line);
    }

    /// Asks the program to leak 16 MiB more and waits until it has.
    fn leak_more(&mut self) {
        self.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        self.stdin.as_mut().unwrap().flush().unwrap();
        self.expect_line("more");
    }

    /// Ends the program's input, waits for it, checks that it succeeded with exactly the
    /// output it prints alone after `inputs` lines, and returns its stderr.
    fn end(self, inputs: usize) -> String {
        let (ok, stdout, stderr) = self.finish();
        assert!(ok, "{stderr}");
        assert_eq!(stdout, expected_stdout(inputs));
        stderr
    }

    /// Ends the program's input and waits for it: (exit success, stdout, stderr).
    fn finish(mut self) -> (bool, String, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the program did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        for line in &self.stdout {
            stdout.push_str(line);
            stdout.push('\n');
        }
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status.success(), stdout, stderr)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply read off the wire: status code, head, body.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends `request` to the port and reads the reply until the server closes the connection.
fn send(port: u16, request: &[u8]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("localhost", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no reply head in {} bytes", bytes.len())))?;
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok(Reply {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
    })
}

fn get(port: u16, path: &str) -> Reply {
    send(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Waits until something accepts connections on the port.
fn wait_for_server(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("localhost", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The rows of `go tool pprof -top -unit=B`: (flat bytes, function), in its order.
fn top_rows(text: &str) -> Vec<(f64, String)> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let flat = fields.next()?;
            let flat: f64 = flat.trim_end_matches('B').parse().ok()?;
            let name: Vec<&str> = fields.skip(4).collect();
            Some((flat, name.join(" ")))
        })
        .collect()
}

fn within(value: f64, truth: f64, tolerance: f64) -> bool {
    (value - truth).abs() <= truth * tolerance
}

fn program(scratch: &ScratchDir) -> PathBuf {
    compile_c("http_leak.c", scratch.path())
}

/// The program (built in a new scratch directory named `label`) serving on a free loopback
/// port, sampling every 16 KiB on average, once it is ready and the port answers.
fn serving(label: &str) -> (ScratchDir, u16, Program) {
    serving_with(label, "")
}

/// [`serving`] with `extra` options added.
fn serving_with(label: &str, extra: &str) -> (ScratchDir, u16, Program) {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), label);
    let exe = program(&scratch);
    let port = free_port();
    let mut p = Program::start(
        &exe,
        &format!("prof:true,lg_prof_sample:14,prof_http:127.0.0.1:{port}{extra}"),
    );
    p.expect_line("ready");
    wait_for_server(port);
    (scratch, port, p)
}

#[test]
fn go_tool_pprof_ranks_the_leak_first_and_shows_its_growth() {
    let go = require_tool("go", "golang-go");
    let (scratch, port, mut p) = serving_with("prof-http-go", ",prof_accum:true");
    // The server's own work (profiles and statistics made, together allocating far more than
    // the 16 KiB sampling distance) must not show in the profile, not even among what was
    // allocated and freed since (`prof_accum`).
    for _ in 0..40 {
        assert_eq!(get(port, "/debug/pprof/heap").status, 200);
        assert_eq!(get(port, "/debug/tally/stats").status, 200);
    }
    let url = format!("http://127.0.0.1:{port}/debug/pprof/heap");
    let (first, fetched) = go_tool_pprof(&go, scratch.path(), &["-top", "-unit=B", &url]);
    let rows = top_rows(&first);
    let truth = 4096.0 * 4096.0;
    assert!(
        rows.first()
            .is_some_and(|(flat, name)| name == "leak_records" && within(*flat, truth, 0.15)),
        "leak_records should come first with 16 MiB:\n{first}"
    );
    assert!(
        rows.iter().any(|(_, name)| name == "main"),
        "the callers are named too:\n{first}"
    );
    assert!(
        !rows.iter().any(|(_, name)| name == "malloc" || name == "calloc"),
        "the allocator's entry points are left out:\n{first}"
    );
    assert!(!first.contains("0x"), "every frame is named:\n{first}");
    // `/debug/pprof/allocs`: the same profile, allocated bytes shown first (`prof_accum`).
    let allocs = format!("http://127.0.0.1:{port}/debug/pprof/allocs");
    let (by_default, _) = go_tool_pprof(&go, scratch.path(), &["-top", "-unit=B", &allocs]);
    assert!(by_default.contains("Type: alloc_space"), "{by_default}");
    assert!(first.contains("Type: inuse_space"), "{first}");
    // The program has one thread: a stack from a thread's start is the server's.
    let (allocated, _) = go_tool_pprof(
        &go,
        scratch.path(),
        &["-top", "-unit=B", "-sample_index=alloc_space", &url],
    );
    let rows = top_rows(&allocated);
    assert!(
        rows.first().is_some_and(|(_, name)| name == "leak_records")
            && !rows
                .iter()
                .any(|(flat, name)| *flat > 0.0 && (name.contains("clone") || name.contains("start_thread"))),
        "the server thread's allocations are not sampled:\n{allocated}"
    );
    // go tool pprof keeps what it fetched: the base of the next comparison.
    let saved = fetched
        .lines()
        .find_map(|l| l.trim().strip_prefix("Saved profile in "))
        .unwrap_or_else(|| panic!("no saved profile:\n{fetched}"))
        .to_string();
    p.leak_more();
    let (diff, _) = go_tool_pprof(
        &go,
        scratch.path(),
        &["-top", "-unit=B", "-diff_base", &saved, &url],
    );
    let rows = top_rows(&diff);
    assert!(
        rows.first()
            .is_some_and(|(flat, name)| name == "leak_records" && within(*flat, truth, 0.15)),
        "leak_records should have grown by 16 MiB:\n{diff}"
    );
    let stderr = p.end(1);
    assert_eq!(stderr, "");
}

#[test]
fn hostile_requests_are_refused_and_the_program_is_unchanged() {
    let (_scratch, port, mut p) = serving("prof-http-hostile");

    let reply = get(port, "/debug/pprof/nothing");
    assert_eq!(reply.status, 404, "{}", reply.head);
    let reply = get(port, "/etc/passwd");
    assert_eq!(reply.status, 404, "{}", reply.head);
    let reply = send(
        port,
        b"POST /debug/pprof/heap HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(reply.status, 405, "{}", reply.head);
    assert!(reply.head.contains("\r\nAllow: GET"), "{}", reply.head);
    let reply = send(port, b"HELLO\r\n\r\n").unwrap();
    assert_eq!(reply.status, 400, "{}", reply.head);

    // A 1 MB header: refused with 431, or the connection closed under the client's feet.
    let mut big = b"GET /debug/pprof/heap HTTP/1.1\r\nX-Filler: ".to_vec();
    big.resize(big.len() + (1 << 20), b'a');
    big.extend_from_slice(b"\r\n\r\n");
    match send(port, &big) {
        Ok(reply) => assert_eq!(reply.status, 431, "{}", reply.head),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }

    // A connection that never sends holds the one server thread for at most its time limit:
    // a client behind it is served, and the silent one is closed.
    let mut silent = TcpStream::connect(("localhost", port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let reply = get(port, "/debug/pprof/");
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert!(
        String::from_utf8_lossy(&reply.body).contains("href=\"heap\""),
        "the index links the heap profile"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "served only after {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(
        rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );

    // Still serving: the profile and the statistics.
    let reply = get(port, "/debug/pprof/heap?gc=1");
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert_eq!(&reply.body[..2], b"\x1f\x8b", "a gzipped profile");
    let reply = get(port, "/debug/tally/stats");
    assert_eq!(reply.status, 200, "{}", reply.head);
    let stats = String::from_utf8_lossy(&reply.body);
    assert!(
        stats.starts_with("{\"tally\":{\"pid\":") && stats.trim_end().ends_with('}'),
        "{stats}"
    );
    assert!(reply.head.contains("Content-Type: application/json"));

    p.leak_more();
    let stderr = p.end(1);
    assert_eq!(stderr, "", "requests print nothing");
}

#[test]
fn addresses_other_hosts_can_reach_need_the_second_option() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-http-remote");
    let exe = program(&scratch);
    let port = free_port();
    let mut p = Program::start(&exe, &format!("prof:true,prof_http:0.0.0.0:{port}"));
    p.expect_line("ready");
    p.leak_more();
    // The refusal is printed before the program's first output could be served: by now the
    // port would be open if it were going to be.
    assert!(TcpStream::connect(("localhost", port)).is_err());
    let stderr = p.end(1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tally: prof_http: 0.0.0.0:")
            && stderr.contains("not a loopback address")
            && stderr.contains("prof_http_remote:true"),
        "{stderr}"
    );

    let mut p = Program::start(
        &exe,
        &format!("prof:true,prof_http:0.0.0.0:{port},prof_http_remote:true"),
    );
    p.expect_line("ready");
    wait_for_server(port);
    assert_eq!(get(port, "/debug/pprof/heap").status, 200);
    let stderr = p.end(0);
    assert_eq!(stderr, "");
}

#[test]
fn a_port_in_use_or_a_bad_address_is_one_line_and_the_program_runs_on() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-http-busy");
    let exe = program(&scratch);
    // Held for a moment (a wrapper that preloads Tally too, before it `exec`s the program): the
    // program gets the port once it is free, and nothing is said.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let p = Program::start(&exe, &format!("prof:true,prof_http:127.0.0.1:{port}"));
    std::thread::sleep(Duration::from_millis(500));
    drop(taken);
    wait_for_server(port);
    assert_eq!(get(port, "/debug/pprof/heap").status, 200);
    assert_eq!(p.end(0), "");

    // Held for good: after the retries, one line, and the program runs on.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut p = Program::start(&exe, &format!("prof:true,prof_http:127.0.0.1:{port}"));
    p.expect_line("ready");
    std::thread::sleep(Duration::from_millis(3000));
    p.leak_more();
    let stderr = p.end(1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("tally: prof_http: cannot listen on 127.0.0.1:{port}: ")),
        "{stderr}"
    );
    drop(taken);

    let mut p = Program::start(&exe, "prof:true,prof_http:6060");
    p.expect_line("ready");
    let stderr = p.end(0);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tally: TALLY_CONF: expected HOST:PORT"),
        "{stderr}"
    );
}

#[test]
fn without_the_profiler_the_heap_answers_503_and_the_statistics_200() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-http-off");
    let exe = program(&scratch);
    let port = free_port();
    let mut p = Program::start(&exe, &format!("prof_http:localhost:{port}"));
    p.expect_line("ready");
    wait_for_server(port);
    let reply = get(port, "/debug/pprof/heap");
    assert_eq!(reply.status, 503, "{}", reply.head);
    assert!(String::from_utf8_lossy(&reply.body).contains("prof:true"));
    assert_eq!(get(port, "/debug/tally/stats").status, 200);
    let stderr = p.end(0);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("tally: prof_http: the heap profiler is off"),
        "{stderr}"
    );
}

/// `tests/programs/http_process.c` in `mode`, serving on a free port: (scratch, port, program,
/// go).
fn process_mode(mode: &str) -> (ScratchDir, u16, Program) {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), &format!("prof-http-{mode}"));
    let exe = compile_c("http_process.c", scratch.path());
    let port = free_port();
    let mut p = Program::start_with(
        &exe,
        &[mode],
        &format!("prof:true,lg_prof_sample:14,prof_http:127.0.0.1:{port}"),
    );
    p.expect_line("ready");
    wait_for_server(port);
    (scratch, port, p)
}

/// The function `go tool pprof -top` ranks first in the heap the port serves now.
fn first_function(go: &Path, scratch: &ScratchDir, port: u16) -> (String, String) {
    let url = format!("http://127.0.0.1:{port}/debug/pprof/heap");
    let (top, _) = go_tool_pprof(go, scratch.path(), &["-top", "-unit=B", &url]);
    let first = top_rows(&top).first().map(|r| r.1.clone()).unwrap_or_default();
    (first, top)
}

#[test]
fn a_daemon_serves_from_the_child_that_goes_on() {
    let go = require_tool("go", "golang-go");
    let (scratch, port, p) = process_mode("daemon");
    let (first, top) = first_function(&go, &scratch, port);
    assert_eq!(first, "leak_in_child", "{top}");
    let (ok, stdout, stderr) = p.finish();
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "ready\n");
    assert_eq!(stderr, "", "the child's server binds quietly");
}

#[test]
fn a_server_that_forks_a_worker_keeps_serving_its_own_heap() {
    let go = require_tool("go", "golang-go");
    // Forking later, and right after the first allocation started Tally and its server thread,
    // which may not have run yet: `fork` waits for its first try at the port, so the worker
    // never takes it.
    for mode in ["worker", "worker_at_once", "worker_at_once", "worker_at_once"] {
        worker_keeps_the_port(&go, mode);
    }
}

fn worker_keeps_the_port(go: &Path, mode: &str) {
    let (scratch, port, p) = process_mode(mode);
    let (first, top) = first_function(go, &scratch, port);
    assert_eq!(first, "leak_in_parent", "{mode}: {top}");
    assert!(!top.contains("leak_in_child"), "{mode}: {top}");
    let (ok, stdout, stderr) = p.finish();
    assert!(ok, "{mode}: {stderr}");
    assert_eq!(stdout, "ready\n", "{mode}");
    assert_eq!(stderr, "", "{mode}: the worker waits for the port quietly");
}

#[test]
fn a_program_taking_its_signals_from_a_signalfd_still_gets_them() {
    let (_scratch, _port, mut p) = process_mode("signalfd");
    let status = Command::new("kill")
        .args(["-USR1", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    p.expect_line("got SIGUSR1");
    let (ok, stdout, stderr) = p.finish();
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "ready\ngot SIGUSR1\n");
    assert_eq!(stderr, "");
}
