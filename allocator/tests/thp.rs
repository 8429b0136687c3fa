//! `thp`: the huge-page advice each kind of mapping gets, read back from the kernel's own
//! account of the mapping (`VmFlags` in `/proc/self/smaps`: `hg` for `MADV_HUGEPAGE`, `nh` for
//! `MADV_NOHUGEPAGE`), whatever the machine's system-wide policy is.

mod child;

use std::ffi::{c_char, c_void, CStr};
use std::ptr;

use tally::api;

/// Whether this kernel takes huge-page advice at all (built with transparent huge pages).
fn kernel_has_thp() -> bool {
    std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists()
}

/// `hg`, `nh` or `-`: the advice on the mapping holding `addr`.
fn advice(addr: usize) -> &'static str {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if let Some(flags) = line.strip_prefix("VmFlags:").filter(|_| inside) {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            return match (flags.contains(&"hg"), flags.contains(&"nh")) {
                (true, false) => "hg",
                (false, true) => "nh",
                (false, false) => "-",
                (true, true) => panic!("both hg and nh on {addr:#x}: {flags:?}"),
            };
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// `opt.thp`, read with `mallctl` as a jemalloc program reads it.
fn opt_thp() -> String {
    let mut word: *const c_char = ptr::null();
    let mut len = std::mem::size_of::<*const c_char>();
    // SAFETY: valid pointers and sizes for a `const char *` out; nothing written.
    let rc = unsafe {
        api::mallctl(
            b"opt.thp",
            ptr::addr_of_mut!(word).cast::<c_void>(),
            &mut len,
            ptr::null(),
            0,
        )
    };
    assert_eq!(rc, 0, "mallctl opt.thp");
    // SAFETY: `opt.thp` hands out a static NUL-terminated string.
    unsafe { CStr::from_ptr(word) }.to_string_lossy().into_owned()
}

/// In the child: a small block (an arena's chunk), a huge block of 8 MiB, and blocks of 60 KiB
/// until one lands in a chunk made of a window of a freed 20 MiB huge block's cached mapping;
/// prints `opt.thp` and the advice on each mapping.
fn report_advice() {
    let mib = 1usize << 20;
    // SAFETY: live blocks, each freed at most once, the freed one not touched again.
    unsafe {
        let small = api::malloc(64) as usize;
        let huge = api::malloc(8 * mib) as usize;
        let freed = api::malloc(20 * mib) as usize;
        let (chunk_advice, huge_advice) = (advice(small), advice(huge));
        api::free(freed as *mut c_void);
        // The arena's chunks fill up; its next chunk comes from the mapping cache, where the
        // 20 MiB just went.
        let mut blocks = Vec::new();
        let mut reused = None;
        while reused.is_none() && blocks.len() < 400 {
            let p = api::malloc(60 << 10) as usize;
            blocks.push(p);
            reused = Some(p).filter(|p| (freed..freed + 20 * mib).contains(p));
        }
        let reused_advice = reused.map_or("none", advice);
        println!(
            "opt.thp={} chunk={chunk_advice} huge={huge_advice} reused_window={} reused_chunk={reused_advice}",
            opt_thp(),
            reused.is_some()
        );
        for p in blocks {
            api::free(p as *mut c_void);
        }
        api::free(small as *mut c_void);
        api::free(huge as *mut c_void);
    }
}

fn child_stdout(env: &[(&str, &str)]) -> String {
    let mut all = vec![("TALLY_CHILD", "advice")];
    all.extend_from_slice(env);
    let out = child::run(&all);
    assert!(out.status.success(), "{env:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_mode_advises_chunks_and_huge_blocks_as_documented() {
    if !kernel_has_thp() {
        // The advice is refused as a whole (EINVAL) and nothing can be read back; the option
        // must still be taken and reported.
        let stdout = child_stdout(&[("TALLY_CONF", "thp:never,narenas:1")]);
        assert!(stdout.contains("opt.thp=never chunk=- huge=-"), "{stdout}");
        return;
    }
    for (conf, want) in [
        // Tally's default: chunks refuse huge pages, huge blocks are the system's, and a cached
        // huge block's window becomes a chunk that refuses them too.
        (
            "",
            "opt.thp=auto chunk=nh huge=- reused_window=true reused_chunk=nh",
        ),
        (
            "thp:auto",
            "opt.thp=auto chunk=nh huge=- reused_window=true reused_chunk=nh",
        ),
        // jemalloc's three: no advice at all, wanted everywhere, refused everywhere.
        (
            "thp:default",
            "opt.thp=default chunk=- huge=- reused_window=true reused_chunk=-",
        ),
        (
            "thp:always",
            "opt.thp=always chunk=hg huge=hg reused_window=true reused_chunk=hg",
        ),
        (
            "thp:never",
            "opt.thp=never chunk=nh huge=nh reused_window=true reused_chunk=nh",
        ),
    ] {
        let conf = if conf.is_empty() {
            "narenas:1".to_owned()
        } else {
            format!("{conf},narenas:1")
        };
        let stdout = child_stdout(&[("TALLY_CONF", &conf)]);
        assert!(stdout.contains(want), "{conf}: {stdout}");
    }
}

#[test]
fn jemallocs_variable_sets_it_and_a_wrong_word_is_one_line() {
    let stdout = child_stdout(&[("MALLOC_CONF", "thp:always,narenas:1")]);
    assert!(stdout.contains("opt.thp=always"), "{stdout}");
    let out = child::run(&[("TALLY_CHILD", "advice"), ("TALLY_CONF", "thp:madvise,narenas:1")]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tally:")).collect();
    assert_eq!(
        errors,
        ["tally: TALLY_CONF: not one of the allowed words for thp: \"madvise\" in \"thp:madvise,narenas:1\""],
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("opt.thp=auto"),
        "the default stays: {out:?}"
    );
}

/// Entry point for the child processes of the tests above (run by [`child::run`]).
#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    match child::case("TALLY_CHILD").as_str() {
        "advice" => report_advice(),
        other => panic!("unknown case {other}"),
    }
}
