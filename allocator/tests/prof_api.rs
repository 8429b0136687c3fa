//! The profiler's Rust API in a process that runs on Tally (this test binary: the crate's
//! default `c-abi` feature makes its malloc Tally's): start inactive, activate, sample, look at
//! the top stacks, write a profile, change the rate, reset, deactivate. Each scenario runs in a
//! child process with its own `TALLY_CONF`.

mod child;

use std::hint::black_box;

#[inline(never)]
fn hold_in_a_known_function(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![i as u8; 64 * 1024]).collect()
}

fn scenario_api(dir: &str) {
    // prof_active:false: nothing sampled yet.
    assert!(!tally::prof::is_active());
    let early = black_box(hold_in_a_known_function(200));
    assert!(tally::prof::top_stacks(10).is_empty(), "sampled while inactive");

    assert!(tally::prof::activate());
    assert!(tally::prof::is_active());
    let held = black_box(hold_in_a_known_function(400)); // 25 MiB
    let top = tally::prof::top_stacks(5);
    assert!(!top.is_empty(), "nothing sampled after activate");
    let biggest = &top[0];
    assert!(biggest.frames.len() >= 2);
    // 25 MiB at a 64 KiB mean distance: the estimate is within 30% with overwhelming odds.
    assert!(
        (biggest.bytes / (25.0 * 1048576.0) - 1.0).abs() < 0.3,
        "top stack holds {} bytes",
        biggest.bytes
    );
    let path = format!("{dir}/api.heap");
    tally::prof::dump(&path).expect("dump");
    let text = std::fs::read(&path).unwrap();
    let profile = tally_format::parse(&text).expect("a valid heap_v2 profile");
    assert_eq!(profile.period, 1 << 16);
    let live = profile.live_estimate();
    assert!(
        live.bytes > 20.0 * 1048576.0,
        "profile holds {} bytes",
        live.bytes
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    assert!(tally::prof::set_sample_rate(20));
    assert!(tally::prof::reset());
    assert!(tally::prof::top_stacks(10).is_empty(), "reset left samples");
    assert!(tally::prof::deactivate());
    let later = black_box(hold_in_a_known_function(400));
    assert!(tally::prof::top_stacks(10).is_empty(), "sampled after deactivate");
    assert_eq!(
        tally::prof::dump("").unwrap_err(),
        tally::prof::DumpError::BadPath
    );
    drop((early, held, later));
    println!("prof-api-ok");
}

fn scenario_off() {
    assert!(!tally::prof::activate());
    assert_eq!(
        tally::prof::dump("/tmp/never.heap").unwrap_err(),
        tally::prof::DumpError::ProfilerOff
    );
    assert!(!tally::prof::reset());
    println!("prof-off-ok");
}

fn scenario_signal(dir: &str) {
    // prof_signal:12 (SIGUSR2). The handler writes the profile itself, at once: this thread
    // allocates nothing between the signal and the check (the path is built before), so a
    // request left for the next allocation would not be there.
    let held = black_box(hold_in_a_known_function(400)); // 25 MiB
    let path = format!("{dir}/sig.{}.0.m0.heap", std::process::id());
    let c_path = std::ffi::CString::new(path.clone()).unwrap();
    // SAFETY: raise runs the handler on this thread before it returns; access only reads the
    // NUL-terminated path.
    let found = unsafe {
        libc::raise(libc::SIGUSR2);
        libc::access(c_path.as_ptr(), libc::F_OK) == 0
    };
    assert!(found, "no {path} right after the signal");
    let profile = tally_format::parse(&std::fs::read(&path).unwrap()).expect("a valid profile");
    assert!(
        profile.live_estimate().bytes > 20.0 * 1048576.0,
        "the profile holds the 25 MiB"
    );
    drop(held);
    println!("prof-signal-ok");
}

/// The child process of the tests below (run by [`run`]).
#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    match child::case("TALLY_PROF_CHILD").as_str() {
        "api" => scenario_api(&child::case("TALLY_PROF_DIR")),
        "off" => scenario_off(),
        "signal" => scenario_signal(&child::case("TALLY_PROF_DIR")),
        other => panic!("unknown case {other}"),
    }
}

fn run(case: &str, conf: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tally-prof-api-{}-{case}", std::process::id()));
    let conf = conf.replace("<dir>", dir.to_str().expect("a UTF-8 temporary directory"));
    let conf = conf.as_str();
    std::fs::create_dir_all(&dir).unwrap();
    let out = child::run(&[
        ("TALLY_PROF_CHILD", case),
        (
            "TALLY_PROF_DIR",
            dir.to_str().expect("a UTF-8 temporary directory"),
        ),
        ("TALLY_CONF", conf),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
    stdout
}

#[test]
fn rust_api_controls_the_profiler() {
    let stdout = run("api", "prof:true,prof_active:false,lg_prof_sample:16");
    assert!(stdout.contains("prof-api-ok"), "{stdout}");
}

#[test]
fn rust_api_reports_a_profiler_that_is_off() {
    let stdout = run("off", "");
    assert!(stdout.contains("prof-off-ok"), "{stdout}");
}

#[test]
fn prof_signal_writes_a_profile_at_once() {
    let stdout = run(
        "signal",
        "prof:true,lg_prof_sample:16,prof_signal:12,prof_prefix:<dir>/sig",
    );
    assert!(stdout.contains("prof-signal-ok"), "{stdout}");
}
