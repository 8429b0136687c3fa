//! `tally.h` compiles, and C programs linked with `-ltally` (no preload) call the C API it
//! declares: `malloc_trim` releases the pages of freed blocks, `tally_stats_print("Jab")` prints
//! one JSON object; jemalloc's `*allocx` family keeps its promises; jemalloc's `mallctl` answers
//! every name of Tally's tree from Tally's own options and statistics, with jemalloc's rules.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tally_tests::{libtally_link_dir, require_tool, run_with_conf, workspace_root, Mode, ScratchDir};

/// Compiles `programs/<name>.c` against `tally.h`, linked with `-ltally` (no preload), into
/// `scratch`; returns the executable.
fn compile_against_header(name: &str, scratch: &ScratchDir) -> PathBuf {
    let cc = require_tool("cc", "build-essential");
    let exe = scratch.join(name);
    let lib_dir = libtally_link_dir(scratch.path());
    let status = Command::new(cc)
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(tally_tests::program(&format!("{name}.c")))
        .arg("-I")
        .arg(workspace_root().join("allocator/include"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-ltally")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .unwrap();
    assert!(status.success(), "compiling {name}.c against tally.h failed");
    exe
}

/// [`compile_against_header`], then runs the program without Tally's variables.
fn run_against_header(name: &str) -> std::process::Output {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), name);
    Command::new(compile_against_header(name, &scratch))
        .env_remove("LD_PRELOAD")
        .env_remove("TALLY_CONF")
        .output()
        .unwrap()
}

#[test]
fn header_declares_the_c_api() {
    let out = run_against_header("header");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("released=1"), "{stdout}");
    let json = stderr
        .lines()
        .find(|l| l.starts_with("{\"tally\":"))
        .expect("one JSON line");
    assert!(json.contains("\"allocated\":") && json.ends_with("}}"), "{json}");
    assert!(
        !json.contains("\"classes\"") && !json.contains("\"arenas\""),
        "'a' and 'b' leave the tables out"
    );
}

/// jemalloc's `*allocx` family (`programs/allocx.c`): for every size up to 64 KiB and every
/// alignment up to a page, `nallocx` agrees with `sallocx` of what `mallocx` gives, blocks are
/// aligned and whole; `MALLOCX_ZERO` blocks are zero even where freed dirty blocks were;
/// `rallocx` keeps contents and alignment and zeroes what it adds; `xallocx` answers with the
/// usable size; `nallocx` of an impossible size is 0.
#[test]
fn the_allocx_family_agrees_with_itself() {
    let out = run_against_header("allocx");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("allocx ok "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: u64 = stdout["allocx ok ".len()..].trim().parse().unwrap();
    assert!(checks > 10_000, "{checks} checks");
}

/// Every leaf of Tally's `mallctl` tree, numbered components as `0` (`4096`, all arenas, under
/// `stats.arenas`).
fn mallctl_names() -> Vec<String> {
    let mut names = Vec::new();
    tally::ctl::for_each_name(&mut |name, _| names.push(name.to_string()));
    names
}

/// Linux's `EPERM` and `EINVAL`.
const EPERM: i32 = 1;
const EINVAL: i32 = 22;

/// The names that only act or only take a value: reading them is `EPERM` (jemalloc's rules).
const NOT_READABLE: [&str; 5] = [
    "thread.tcache.flush",
    "arena.0.purge",
    "arena.0.decay",
    "prof.dump",
    "prof.reset",
];

/// jemalloc's `mallctl` (`programs/mallctl.c`, linked with `-ltally`): every name of Tally's tree
/// reads with the size jemalloc gives it (or is refused with `EPERM` where jemalloc refuses a
/// read); the `opt.*` names give the options set in `TALLY_CONF`, one per option of Tally's
/// table; `stats.*` agree with `malloc_stats_print` and hold still between `epoch` writes;
/// `ENOENT`, `EINVAL` and `EPERM` come where jemalloc returns them; `arena.<i>.purge` leaves no
/// dirty page; `thread.arena` moves the thread; `prof.dump` writes a profile.
#[test]
fn mallctl_answers_every_name_from_tallys_own_state() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "mallctl");
    let exe = compile_against_header("mallctl", &scratch);
    let prefix = scratch.join("pfx");
    let conf = format!(
        "abort_conf:true,narenas:3,tcache_max:4096,dirty_decay_ms:5000,muzzy_decay_ms:100,prof:true,\
         lg_prof_sample:14,prof_accum:true,prof_prefix:{},stats_print_opts:Ja,guard_slots:16,thp:never",
        prefix.display()
    );
    let names = mallctl_names();
    let names_file = scratch.join("names");
    std::fs::write(&names_file, names.join("\n")).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.arg(scratch.path()).arg(&names_file);
    let out = run_with_conf(cmd, Mode::Linked, &conf, Duration::from_secs(60));
    out.assert_success();
    let stdout = out.stdout_text();
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("mallctl ok ")),
        "{stdout}"
    );
    // name -> (rc, size, value)
    let mut seen = std::collections::HashMap::new();
    for line in stdout.lines().filter(|l| l.contains(" rc=")) {
        let (name, rest) = line.split_once(" rc=").unwrap();
        let (rc, rest) = rest.split_once(" size=").unwrap();
        let (size, value) = rest.split_once(" value=").unwrap();
        seen.insert(
            name.to_string(),
            (
                rc.parse::<i32>().unwrap(),
                size.parse::<usize>().unwrap(),
                value.to_string(),
            ),
        );
    }
    assert_eq!(seen.len(), names.len(), "a line per name");
    for name in &names {
        let (rc, size, _) = &seen[name];
        if NOT_READABLE.contains(&name.as_str()) {
            assert_eq!(*rc, EPERM, "{name}: reading it is EPERM");
        } else if name == "arenas.lookup" {
            assert_eq!(*rc, EINVAL, "{name}: without a pointer written, EINVAL");
        } else {
            assert_eq!(*rc, 0, "{name}: not readable");
            assert!([1, 4, 8].contains(size), "{name}: size {size}");
        }
    }
    let value = |name: &str| seen[name].2.clone();
    // Every option of Tally's table answers under opt.<name>.
    for spec in tally::options::TABLE {
        let name = format!("opt.{}", spec.name);
        assert!(
            seen.get(&name).is_some_and(|v| v.0 == 0),
            "{name} is not answered"
        );
    }
    for (name, want) in [
        ("opt.abort_conf", "1".to_string()),
        ("opt.narenas", "3".into()),
        ("arenas.narenas", "3".into()),
        ("opt.tcache_max", "4096".into()),
        ("arenas.tcache_max", "4096".into()),
        ("opt.dirty_decay_ms", "5000".into()),
        ("opt.muzzy_decay_ms", "100".into()),
        ("opt.prof", "1".into()),
        ("opt.prof_active", "1".into()),
        ("opt.lg_prof_sample", "14".into()),
        ("prof.lg_sample", "14".into()),
        ("opt.lg_prof_interval", "-1".into()),
        ("opt.prof_accum", "1".into()),
        ("opt.prof_leak", "0".into()),
        ("opt.prof_prefix", format!("\"{}\"", prefix.display())),
        ("opt.stats_print_opts", "\"Ja\"".into()),
        ("opt.junk", "\"false\"".into()),
        ("opt.thp", "\"never\"".into()),
        ("opt.guard_slots", "16".into()),
        ("opt.guard_rate", "0".into()),
        ("opt.guard_report", "\"\"".into()),
        ("opt.background_thread", "0".into()),
        ("arenas.page", "4096".into()),
        ("arenas.quantum", "16".into()),
        ("config.prof", "1".into()),
        ("config.stats", "1".into()),
        ("stats.arenas.4096.dirty_decay_ms", "5000".into()),
    ] {
        assert_eq!(value(name), want, "{name}");
    }
    let version = value("version");
    assert!(
        version.starts_with("\"5.3.0-") && version.contains("tally"),
        "{version}"
    );
    // Profiles in the scratch directory whose names start with `start` and end with `end`.
    let profiles = |start: &str, end: &str| {
        std::fs::read_dir(scratch.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(start) && n.ends_with(end))
            .count()
    };
    // The profile `prof.dump` wrote without a path is named after prof_prefix.
    assert_eq!(
        profiles("pfx.", ".heap"),
        1,
        "one profile named after prof_prefix"
    );

    // The same checks where every block takes a slow path: no thread caches, guarded sampling,
    // the profiler sampling every 256 bytes (`thread.allocated` and `thread.deallocated` count
    // each path). No prof_prefix: the profile without a path is `tally.<pid>.<seq>.m<n>.heap`
    // in the working directory, the scratch directory here (the package's directory, where a
    // test runs, kept one after every run before).
    let mut cmd = Command::new(&exe);
    cmd.arg(scratch.path()).current_dir(scratch.path());
    let conf = "prof:true,lg_prof_sample:8,tcache:false,guard_rate:20";
    let out = run_with_conf(cmd, Mode::Linked, conf, Duration::from_secs(60));
    out.assert_success();
    assert!(out.stdout_text().starts_with("mallctl ok "), "{}", out.dump());
    assert_eq!(
        profiles("tally.", ".m0.heap"),
        1,
        "one profile named after the default prefix"
    );
}

/// `docs/jemalloc-api.md` lists every name Tally answers (numbers written `<i>` and `<j>`).
#[test]
fn every_mallctl_name_is_documented() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/jemalloc-api.md")).unwrap();
    for name in mallctl_names() {
        let mut k = 0;
        let spelled: Vec<String> = name
            .split('.')
            .map(|part| {
                if part.bytes().all(|b| b.is_ascii_digit()) {
                    k += 1;
                    if k == 1 { "<i>" } else { "<j>" }.to_string()
                } else {
                    part.to_string()
                }
            })
            .collect();
        let spelled = format!("`{}`", spelled.join("."));
        assert!(
            doc.contains(&spelled),
            "docs/jemalloc-api.md does not list {spelled}"
        );
    }
}
