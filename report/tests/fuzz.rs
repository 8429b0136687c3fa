//! Fuzzing through the command: real dumps (the repository's jemalloc dump of `ls`, and the
//! final dump of `run_leak.c` under the real `libtally.so`) and real ELF files (the compiled
//! `run_leak`, and the dynamic loader, which `ls` maps) are damaged (cut, bytes flipped, counts
//! made huge, stacks made thousands of frames deep, addresses made bogus, ELF section headers
//! pointed past the file) and run through `tally report` with every renderer (`--text`,
//! `--collapsed`, `--pprof`, `--svg` when Graphviz is there, `--flame`, `--html`, `--base`) and
//! through `tally leaks`. Every run ends within a bound, with exit code 0 or 2, nothing but
//! `tally: ` lines on stderr (at most one of them not a warning, and that one only with code 2)
//! and no panic. The undamaged inputs still give the right answer. The generator is seeded, so
//! a failure reproduces; its case is printed, and its damaged file stays in Cargo's temporary
//! directory for tests (`target/tmp/fuzz/`) until the next run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LS: &[u8] = include_bytes!("data/jemalloc-5.3-ls.heap");

/// A system library that the `ls` dump maps, with frames of its stacks in it (the dynamic
/// loader: small, and its symbols name those frames).
const SYSTEM_LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";

/// Cases per kind of input.
const CASES: usize = 80;

/// The longest any one run may take (the machine is shared; a healthy run takes well under 1 s).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A damaged copy of the dump `original`: one to three damages.
fn mutate_dump(original: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = original.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let stacks: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(b"@ "))
        .collect();
    let mut cut = None;
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(lines.len());
        match rng.below(9) {
            // Cut short, anywhere.
            0 => cut = Some(rng.below(original.len() + 1)),
            // A byte flipped.
            1 => {
                if !lines[i].is_empty() {
                    let at = rng.below(lines[i].len());
                    lines[i][at] ^= 1 << rng.below(8);
                }
            }
            // Huge, negative or odd counts in a counts line.
            2 => {
                let line = String::from_utf8_lossy(&lines[i]).into_owned();
                if line.contains(": ") {
                    let number = *rng.pick(&[
                        "18446744073709551615",
                        "18446744073709551616",
                        "99999999999999999999999999",
                        "9223372036854775807",
                        "-1",
                        "0",
                        "1e308",
                    ]);
                    let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
                    let numeric: Vec<usize> = (0..words.len())
                        .filter(|&w| {
                            words[w]
                                .trim_matches(|c| c == '[' || c == ']' || c == ':')
                                .parse::<u64>()
                                .is_ok()
                        })
                        .collect();
                    if !numeric.is_empty() {
                        let w = *rng.pick(&numeric);
                        let keep: String = words[w].chars().filter(|c| "[]:".contains(*c)).collect();
                        words[w] = if keep.starts_with('[') {
                            format!("[{number}")
                        } else {
                            format!("{number}{keep}")
                        };
                        lines[i] = words.join(" ").into_bytes();
                    }
                }
            }
            // A stack thousands of frames deep (recursion), and the header's period made odd.
            3 => {
                if let Some(&s) = stacks.get(rng.below(stacks.len())) {
                    let frames: Vec<String> = String::from_utf8_lossy(&lines[s])
                        .split_whitespace()
                        .skip(1)
                        .map(str::to_string)
                        .collect();
                    if !frames.is_empty() {
                        let depth = 1000 + rng.below(20_000);
                        let mut deep = String::from("@");
                        for d in 0..depth {
                            deep.push(' ');
                            deep.push_str(&frames[d % frames.len()]);
                        }
                        lines[s] = deep.into_bytes();
                    }
                }
            }
            // Bogus addresses: 0, the top of the address space, a mapping's last byte, random.
            4 => {
                if let Some(&s) = stacks.get(rng.below(stacks.len())) {
                    let mut words: Vec<String> = String::from_utf8_lossy(&lines[s])
                        .split(' ')
                        .map(str::to_string)
                        .collect();
                    if words.len() > 1 {
                        let w = 1 + rng.below(words.len() - 1);
                        let random = format!("0x{:x}", rng.next());
                        words[w] = rng
                            .pick(&[
                                "0x0",
                                "0x1",
                                "0xffffffffffffffff",
                                "0x7fffffffffff",
                                "0x10000000000000000",
                                &random,
                            ])
                            .to_string();
                        lines[s] = words.join(" ").into_bytes();
                    }
                }
            }
            // A memory map line made bogus: reversed, empty, past the end, huge offset.
            5 => {
                let maps: Vec<usize> = (0..lines.len())
                    .filter(|&m| {
                        lines[m].len() > 20 && lines[m][..20].contains(&b'-') && lines[m].contains(&b'/')
                    })
                    .collect();
                if let Some(&m) = maps.get(rng.below(maps.len())) {
                    let line = String::from_utf8_lossy(&lines[m]).into_owned();
                    let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
                    if words.len() > 2 {
                        match rng.below(3) {
                            0 => {
                                if let Some((a, b)) = words[0].split_once('-') {
                                    words[0] = format!("{b}-{a}");
                                }
                            }
                            1 => words[2] = "ffffffffffffffff".to_string(),
                            _ => {
                                if let Some((a, _)) = words[0].split_once('-') {
                                    words[0] = format!("{a}-{a}");
                                }
                            }
                        }
                        lines[m] = words.join(" ").into_bytes();
                    }
                }
            }
            // The sampling period made bogus.
            6 if rng.below(3) == 0 => {
                let period = *rng.pick(&["0", "1", "18446744073709551615", "-524288", "1e9", ""]);
                lines[0] = format!("heap_v2/{period}").into_bytes();
            }
            // A line duplicated, dropped or swapped with another.
            6 => {
                let line = lines[i].clone();
                let j = rng.below(lines.len());
                lines.insert(j, line);
            }
            7 => {
                lines.remove(i);
                if lines.is_empty() {
                    lines.push(Vec::new());
                }
            }
            _ => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
        }
    }
    let mut bytes = lines.join(&b'\n');
    if let Some(cut) = cut {
        bytes.truncate(cut.min(bytes.len()));
    }
    bytes
}

/// Little-endian integers of an ELF64 file.
fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}
fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}
fn write_u64(bytes: &mut [u8], at: usize, value: u64) {
    if let Some(slot) = bytes.get_mut(at..at + 8) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

/// A damaged copy of the ELF file `original` (its magic kept, so that it is taken as the
/// binary): cut short, bytes flipped in its headers or in one section, or a section's offset or
/// size (or the section table's place and count) made bogus.
fn mutate_elf(original: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let shoff = read_u64(&bytes, 0x28).unwrap_or(0) as usize;
    let shnum = read_u16(&bytes, 0x3c).unwrap_or(0) as usize;
    let section = |rng: &mut Rng| shoff + 64 * rng.below(shnum);
    for _ in 0..1 + rng.below(2) {
        match rng.below(6) {
            0 => bytes.truncate(4 + rng.below(bytes.len().saturating_sub(4) + 1)),
            1 => {
                // The ELF and program headers.
                let at = 4 + rng.below(bytes.len().min(4096).saturating_sub(4));
                if at < bytes.len() {
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            2 => {
                // Bytes of one section's contents (symbols, strings, DWARF, ...).
                let header = section(rng);
                let (Some(offset), Some(size)) =
                    (read_u64(&bytes, header + 0x18), read_u64(&bytes, header + 0x20))
                else {
                    continue;
                };
                for _ in 0..1 + rng.below(16) {
                    let at = offset as usize + rng.below(size as usize);
                    if at < bytes.len() {
                        bytes[at] = rng.next() as u8;
                    }
                }
            }
            3 => {
                // A section's offset or size: huge, past the end, or overlapping the headers.
                let header = section(rng) + if rng.below(2) == 0 { 0x18 } else { 0x20 };
                let value = *rng.pick(&[u64::MAX, u64::MAX / 2, original.len() as u64, 1 << 40, 0, 1]);
                write_u64(&mut bytes, header, value);
            }
            4 => {
                // The section table's place or its count.
                if rng.below(2) == 0 {
                    write_u64(
                        &mut bytes,
                        0x28,
                        *rng.pick(&[u64::MAX, original.len() as u64 - 8, 64]),
                    );
                } else if let Some(slot) = bytes.get_mut(0x3c..0x3e) {
                    slot.copy_from_slice(&(rng.next() as u16).to_le_bytes());
                }
            }
            _ => {
                // Bytes of the section table itself.
                for _ in 0..1 + rng.below(8) {
                    let at = section(rng) + rng.below(64);
                    if at < bytes.len() {
                        bytes[at] = rng.next() as u8;
                    }
                }
            }
        }
    }
    bytes
}

/// The ways a case is run.
#[derive(Debug, Clone, Copy)]
enum Render {
    Text,
    Collapsed,
    Pprof,
    Svg,
    Flame,
    Html,
    Base,
    Leaks,
}

const RENDERS: [Render; 8] = [
    Render::Text,
    Render::Collapsed,
    Render::Pprof,
    Render::Svg,
    Render::Flame,
    Render::Html,
    Render::Base,
    Render::Leaks,
];

/// The arguments of `tally` for `render` of `dump` (with `binary` first when given), writing any
/// file into `dir`; `good` is an undamaged dump for `--base` and `leaks`.
fn arguments(render: Render, binary: Option<&Path>, dump: &Path, good: &Path, dir: &Path) -> Vec<PathBuf> {
    let out = |name: &str| dir.join(name);
    let mut args: Vec<PathBuf> = match render {
        Render::Text => vec!["report".into(), "--text".into(), "--lines".into()],
        Render::Collapsed => vec!["report".into(), "--collapsed".into()],
        Render::Pprof => vec!["report".into(), "--pprof".into(), out("out.pb.gz")],
        Render::Svg => vec!["report".into(), "--svg".into(), out("out.svg")],
        Render::Flame => vec!["report".into(), "--flame".into(), out("flame.svg")],
        Render::Html => vec!["report".into(), "--html".into(), out("out.html")],
        Render::Base => vec!["report".into(), "--text".into(), "--base".into(), good.into()],
        Render::Leaks => vec!["leaks".into()],
    };
    args.extend(binary.map(Path::to_path_buf));
    if let Render::Leaks = render {
        // A series needs three dumps.
        args.extend([good.into(), good.into()]);
    }
    args.push(dump.into());
    args
}

/// How runs ended: reports, clear errors, and runs with warnings.
#[derive(Debug, Default)]
struct Outcomes {
    reports: usize,
    errors: usize,
    warned: usize,
    /// The first error and the first warning seen, for the summary.
    first_error: Option<String>,
    first_warning: Option<String>,
}

/// Runs `tally` with `args` within [`RUN_LIMIT`] and checks how it ended (module docs); counts
/// it in `outcomes`. `case` names the case in a failure.
fn check_run(args: &[PathBuf], case: &str, outcomes: &mut Outcomes) {
    let mut child = common::tally()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr_pipe }, &mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{case}: tally {args:?} ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = reader.join().unwrap();
    assert!(
        !stderr.contains("panicked"),
        "{case}: tally {args:?} panicked: {stderr}"
    );
    assert!(
        stderr.lines().all(|l| l.starts_with("tally: ")),
        "{case}: tally {args:?}: stderr not all tally's lines: {stderr}"
    );
    let errors = stderr
        .lines()
        .filter(|l| !l.starts_with("tally: warning: "))
        .count();
    match status.code() {
        Some(0) => {
            assert_eq!(
                errors, 0,
                "{case}: tally {args:?}: success with an error: {stderr}"
            );
            outcomes.reports += 1;
        }
        Some(2) => {
            assert_eq!(errors, 1, "{case}: tally {args:?}: not one error line: {stderr}");
            outcomes.errors += 1;
            outcomes.first_error.get_or_insert(stderr.clone());
        }
        other => panic!("{case}: tally {args:?}: exit {other:?} ({status}): {stderr}"),
    }
    if stderr.contains("tally: warning: ") {
        outcomes.warned += 1;
        outcomes.first_warning.get_or_insert(stderr.clone());
    }
}

/// Runs [`CASES`] damaged versions of `original` (by `mutate`, from `seed`) through every
/// renderer in turn, each written to a file named `name` that `args` puts among the arguments
/// (`None`: the renderer is skipped).
fn fuzz(
    name: &str,
    original: &[u8],
    mutate: fn(&[u8], &mut Rng) -> Vec<u8>,
    seed: u64,
    args: &dyn Fn(Render, &Path) -> Option<Vec<PathBuf>>,
) -> Outcomes {
    let mut rng = Rng(seed);
    // Not in the test's temporary directory, which goes when a failure unwinds: the failing case
    // stays to be looked at.
    let case_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz/{seed:x}"));
    std::fs::create_dir_all(&case_dir).unwrap();
    let path = case_dir.join(name);
    let mut outcomes = Outcomes::default();
    for round in 0..CASES {
        let bytes = mutate(original, &mut rng);
        std::fs::write(&path, &bytes).unwrap();
        let render = RENDERS[round % RENDERS.len()];
        let Some(args) = args(render, &path) else {
            continue;
        };
        let case = format!("{name} case {round} (seed {seed:#x}, kept in {})", path.display());
        check_run(&args, &case, &mut outcomes);
    }
    eprintln!("{name}: {outcomes:?}");
    outcomes
}

/// Whether Graphviz's `dot` is there (`--svg` needs it; without it that renderer is skipped).
fn have_dot() -> bool {
    Command::new("sh")
        .args(["-c", "command -v dot"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `run_leak.c` compiled into `dir`, and its final dump under the real `libtally.so`.
fn tally_dump_of_run_leak(dir: &Path) -> (PathBuf, PathBuf) {
    let program = compile(&data("run_leak.c"), dir, "run_leak");
    let prefix = dir.join("t");
    let status = Command::new(&program)
        .env("LD_PRELOAD", libtally())
        .env(
            "TALLY_CONF",
            format!(
                "prof:true,prof_final:true,lg_prof_sample:14,prof_prefix:{}",
                prefix.display()
            ),
        )
        .env_remove("MALLOC_CONF")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "run_leak exits with 3");
    let dump = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".f.heap"))
        .expect("libtally.so wrote a final dump");
    (program, dump)
}

#[test]
fn damaged_dumps_and_elf_files_through_every_renderer() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dot = have_dot();
    let (program, tally_dump) = tally_dump_of_run_leak(d);
    let ls_dump = d.join("ls.heap");
    std::fs::write(&ls_dump, LS).unwrap();

    // The undamaged inputs give the right answer.
    let text = stdout(
        tally()
            .args(["report", "--text", "--lines"])
            .arg(&program)
            .arg(&tally_dump),
    );
    let source = data("run_leak.c");
    let want = format!("leak_here {}:{}", source.display(), line_of(&source, "LEAK_HERE"));
    assert_eq!(
        rows(&text).first().map(|r| r.name.as_str()),
        Some(want.as_str()),
        "{text}"
    );
    assert_close(rows(&text)[0].flat, 32.0, 10.0, "the leak's live MiB");
    let text = stdout(tally().args(["report", "--text"]).arg(&ls_dump));
    assert!(text.starts_with("Total: "), "{text}");
    assert!(!rows(&text).is_empty(), "{text}");
    // The library given as BINARY replaces the mapped one (so damaging it is not for nothing).
    if Path::new(SYSTEM_LIBRARY).is_file() {
        let output = tally()
            .args(["report", "--text", SYSTEM_LIBRARY])
            .arg(&ls_dump)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("no file of that name"), "{stderr}");
    }
    for render in RENDERS {
        if matches!(render, Render::Svg) && !dot {
            continue;
        }
        for (binary, dump) in [(Some(program.as_path()), &tally_dump), (None, &ls_dump)] {
            let args = arguments(render, binary, dump, dump, d);
            let output = tally().args(&args).output().unwrap();
            assert_eq!(
                output.status.code(),
                Some(0),
                "undamaged: tally {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    let keep = |render: Render| !matches!(render, Render::Svg) || dot;
    // Damaged dumps: Tally's own (with its program) and jemalloc's of ls.
    let tally_bytes = std::fs::read(&tally_dump).unwrap();
    let tally_dumps = fuzz(
        "tally.heap",
        &tally_bytes,
        mutate_dump,
        0x5eed_0001,
        &|render, path| keep(render).then(|| arguments(render, Some(&program), path, &tally_dump, d)),
    );
    let ls_dumps = fuzz("ls.heap", LS, mutate_dump, 0x5eed_0002, &|render, path| {
        keep(render).then(|| arguments(render, None, path, &ls_dump, d))
    });
    // Damaged ELF files: the program (full DWARF) with its dump, and a system library with the
    // ls dump (which maps it), each given as BINARY under the mapped file's name.
    let program_bytes = std::fs::read(&program).unwrap();
    let programs = fuzz(
        "run_leak",
        &program_bytes,
        mutate_elf,
        0x5eed_0003,
        &|render, path| keep(render).then(|| arguments(render, Some(path), &tally_dump, &tally_dump, d)),
    );
    let mut runs = [&tally_dumps, &ls_dumps, &programs]
        .iter()
        .map(|t| t.reports + t.errors)
        .sum::<usize>();
    if Path::new(SYSTEM_LIBRARY).is_file() {
        let library_bytes = std::fs::read(SYSTEM_LIBRARY).unwrap();
        let libraries = fuzz(
            "ld-linux-x86-64.so.2",
            &library_bytes,
            mutate_elf,
            0x5eed_0004,
            &|render, path| keep(render).then(|| arguments(render, Some(path), &ls_dump, &ls_dump, d)),
        );
        runs += libraries.reports + libraries.errors;
    }
    // The damage is neither all harmless nor all fatal: both outcomes happen with each dump,
    // and damaged ELF files are warned about.
    for dumps in [&tally_dumps, &ls_dumps] {
        assert!(dumps.reports >= 5 && dumps.errors >= 5, "{dumps:?}");
    }
    assert!(programs.warned >= 5, "{programs:?}");
    eprintln!("{runs} damaged runs in {:.1?}", started.elapsed());
    assert!(runs >= 200, "{runs} runs");
}
