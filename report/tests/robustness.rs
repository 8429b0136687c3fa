//! Thousands of damaged versions of real dumps (cut, bytes flipped, lines duplicated, dropped or
//! swapped): the report never panics, and every error is one line naming the file and line.

mod common;

use std::io::Write;
use std::path::Path;

use common::Rng;
use tally_report::symbolize::{Symbolizer, SymbolizerOptions};
use tally_report::{dump, write_report, Error, Output, ReportOptions};

const LS: &[u8] = include_bytes!("data/jemalloc-5.3-ls.heap");

fn mutate(original: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 => bytes.truncate(rng.below(bytes.len() + 1)),
            1 => {
                if !bytes.is_empty() {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            2 => {
                if !bytes.is_empty() {
                    let at = rng.below(bytes.len());
                    bytes[at] = b"0@ :\n[]tx*-/9f"[rng.below(14)];
                }
            }
            op => {
                let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
                match op {
                    3 => {
                        let line = lines[i].clone();
                        lines.insert(j, line);
                    }
                    4 => {
                        lines.remove(i);
                    }
                    _ => lines.swap(i, j),
                }
                bytes = lines.join(&b'\n');
            }
        }
    }
    bytes
}

#[test]
fn mutated_dumps_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutant.heap");
    // One symbolizer for all, as for a dump and its base: files are loaded once.
    let mut symbolizer = Symbolizer::new(SymbolizerOptions::default());
    let (mut errors, mut reports) = (0, 0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let bytes = mutate(LS, &mut rng);
        let output = [
            Output::Text,
            Output::Collapsed,
            Output::Pprof,
            Output::Dot,
            Output::Flame,
            Output::Html,
        ][round % 6];
        let options = ReportOptions {
            output,
            ..ReportOptions::default()
        };
        match dump::parse(&bytes) {
            Ok(dump) => {
                let mut out = Vec::new();
                let series = std::slice::from_ref(&dump);
                write_report(series, Some(&dump), &options, &mut symbolizer, &mut out).unwrap();
                write_report(series, None, &options, &mut symbolizer, &mut out).unwrap();
                reports += 1;
            }
            Err(e) => {
                let error = Error::at(&path, e.line, e.message);
                let text = error.to_string();
                assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
                assert!(
                    text.starts_with(&format!("{}:{}: ", path.display(), e.line)),
                    "{text}"
                );
                let lines = bytes.split(|&b| b == b'\n').count();
                assert!(
                    (1..=lines).contains(&e.line),
                    "line {} of {lines}: {text}",
                    e.line
                );
                errors += 1;
            }
        }
    }
    assert!(
        errors > 1000 && reports > 100,
        "{errors} errors, {reports} reports"
    );
}

#[test]
fn mutated_dumps_through_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(42);
    for round in 0..60 {
        let path = dir.path().join(format!("m{round}.heap"));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&mutate(LS, &mut rng))
            .unwrap();
        let output = common::tally().arg("report").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => assert!(
                stderr.lines().all(|l| l.starts_with("tally: warning: ")),
                "{stderr}"
            ),
            Some(2) => {
                assert_eq!(stderr.lines().count(), 1, "{stderr}");
                assert!(
                    stderr.starts_with(&format!("tally: {}:", Path::new(&path).display())),
                    "{stderr}"
                );
            }
            other => panic!("exit {other:?}: {stderr}"),
        }
    }
}
