//! `tally::prof::pprof()`: the live heap as a gzipped pprof profile, made in the process, served
//! the way a Rust service would mount it (`GET /debug/pprof/heap` on a loopback port) and fetched
//! by the real client, `go tool pprof` (Debian's `golang-go`), over HTTP.
//!
//! The test re-runs itself in a child with Tally linked in as the global allocator and
//! `TALLY_CONF=prof:true,lg_prof_sample:12`: the child keeps 24 MiB live from one function
//! (`leaky_function`, 6144 blocks of 4 KiB) and 1 MiB from another, then serves the profile.
//! `go tool pprof` fetches it over HTTP and reads it: the mean sampling distance as the period,
//! the largest stack holding 24 MiB and 6144 objects within 15% (about 7,000 samples at a 4 KiB
//! mean distance: the estimate's spread is near 1%), and the executable's mapping with its path
//! and GNU build id. The functions are named in the process: `go tool pprof -top` (which then
//! reads no file) ranks `leaky_function` first, with none of the allocator's frames (Tally's
//! own, `__rust_alloc`, `RawVec`) in the stacks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use tally_tests::{go_tool_pprof, require_tool, ScratchDir};

#[global_allocator]
static A: tally::Tally = tally::Tally;

/// Set in the child: keep the heap and serve the profile instead of spawning.
const CHILD_ENV: &str = "TALLY_TESTS_PPROF_CHILD";

/// 6144 blocks of 4 KiB, allocated from this function's own body (a loop, not a tail call into
/// an iterator's `collect` or a helper, which would leave no frame of it on the stack; and not
/// the same code as `small_function`, which the compiler would merge into one).
#[inline(never)]
fn leaky_function() -> Vec<Box<[u8]>> {
    let mut kept = Vec::with_capacity(6144);
    for _ in 0..6144 {
        kept.push(std::hint::black_box(vec![0x11u8; 4096]).into_boxed_slice());
    }
    std::hint::black_box(&kept);
    kept
}

/// 256 blocks of 4 KiB, 16 at a time.
#[inline(never)]
fn small_function() -> Vec<Box<[u8]>> {
    let mut kept = Vec::new();
    for _ in 0..16 {
        for _ in 0..16 {
            kept.push(std::hint::black_box(vec![0x22u8; 4096]).into_boxed_slice());
        }
        std::hint::black_box(&kept);
    }
    kept
}

/// The child: keeps the heap, serves `GET /debug/pprof/heap` (anything else: 404) until killed.
fn serve() {
    let kept = (
        std::hint::black_box(leaky_function()),
        std::hint::black_box(small_function()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("\nTALLY_PPROF_PORT={}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let response = if request.starts_with(b"GET /debug/pprof/heap") {
            let body = tally::prof::pprof();
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            r
        } else {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        };
        let _ = stream.write_all(&response);
    }
    drop(kept);
}

/// `go tool pprof` on `url`, with `args` before it: its stdout.
fn pprof(go: &std::path::Path, scratch: &ScratchDir, args: &[&str], url: &str) -> String {
    let args: Vec<&str> = args.iter().copied().chain([url]).collect();
    go_tool_pprof(go, scratch.path(), &args).0
}

#[test]
fn go_tool_pprof_reads_the_live_heap_over_http() {
    if std::env::var_os(CHILD_ENV).is_some() {
        serve();
        return;
    }
    let go = require_tool("go", "golang-go");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-pprof");
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            "go_tool_pprof_reads_the_live_heap_over_http",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("TALLY_CONF", "prof:true,lg_prof_sample:12")
        .env_remove("LD_PRELOAD")
        .env_remove("MALLOC_CONF")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // The port, read by a thread so that a child that never prints it fails the test in time.
    let stdout = child.stdout.take().unwrap();
    let child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.trim().strip_prefix("TALLY_PPROF_PORT=") {
                let _ = tx.send(port.parse::<u16>().ok());
                return;
            }
        }
        let _ = tx.send(None);
    });
    let port = rx
        .recv_timeout(Duration::from_secs(120))
        .ok()
        .flatten()
        .expect("the child did not serve");
    let url = format!("http://127.0.0.1:{port}/debug/pprof/heap");
    // The numbers, read raw and checked against what the child holds.
    let raw = pprof(&go, &scratch, &["-raw", "-symbolize=none"], &url);
    assert!(raw.contains("Period: 4096"), "{raw}");
    assert!(
        raw.contains("inuse_objects/count inuse_space/bytes[dflt]"),
        "{raw}"
    );
    // Samples: `objects bytes: location ids`.
    let samples: Vec<(f64, f64)> = raw
        .lines()
        .filter_map(|l| {
            let (values, _) = l.split_once(':')?;
            let mut v = values.split_whitespace().map(|x| x.parse::<f64>());
            Some((v.next()?.ok()?, v.next()?.ok()?))
        })
        .collect();
    let truth = 6144.0 * 4096.0;
    let (objects, bytes) = samples
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_else(|| panic!("no samples:\n{raw}"));
    assert!(
        (bytes - truth).abs() < truth * 0.15,
        "the largest stack holds {bytes} bytes for {truth}:\n{raw}"
    );
    assert!(
        (objects - 6144.0).abs() < 6144.0 * 0.15,
        "{objects} objects for 6144:\n{raw}"
    );
    // The executable's mapping, with its path and GNU build id (as readelf reads it).
    let readelf = Command::new(require_tool("readelf", "binutils"))
        .arg("-n")
        .arg(&exe)
        .output()
        .unwrap();
    let notes = String::from_utf8_lossy(&readelf.stdout);
    let build_id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("the test binary has a build id");
    let mapping = raw
        .lines()
        .find(|l| l.contains(exe.to_str().unwrap()))
        .unwrap_or_else(|| panic!("no mapping of {exe:?}:\n{raw}"));
    assert!(
        mapping.contains(build_id.trim()),
        "{mapping} (build id {build_id})"
    );
    assert!(
        mapping.ends_with("[FN]"),
        "the mapping says its functions are named: {mapping}"
    );
    // The names, as the tool shows them: the leaking function first, then the smaller one.
    let top = pprof(&go, &scratch, &["-top", "-unit=B"], &url);
    let rows: Vec<(f64, &str)> = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let flat = fields.next()?.trim_end_matches('B').parse().ok()?;
            Some((flat, fields.nth(4)?))
        })
        .collect();
    assert!(
        rows.first().is_some_and(
            |&(flat, name)| name == "prof_pprof::leaky_function" && (flat - truth).abs() < truth * 0.15
        ),
        "{top}"
    );
    assert_eq!(
        rows.get(1).map(|r| r.1),
        Some("prof_pprof::small_function"),
        "{top}"
    );
    assert!(
        !rows.iter().any(|(_, name)| name.starts_with("tally::")
            || name.starts_with("<tally::")
            || name.starts_with("alloc::")
            || name.contains("__rust_alloc")),
        "the allocator's frames are left out:
{top}"
    );
    drop(child);
}
