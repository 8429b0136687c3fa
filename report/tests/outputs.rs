//! The graphical and exchange formats, each read back by the real tool that consumes it:
//! `--pprof` by `go tool pprof` (Debian `golang-go`), `--svg` drawn by Graphviz's `dot`
//! (`graphviz`), `--flame` and `--html` parsed as XML, and the HTML page rendered by headless
//! Chromium (`chromium`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Builds and profiles `leak.c`: (program, [manual dump, final dump]).
fn leak_dumps(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let program = compile(&data("leak.c"), dir, "leak");
    let dumps = profile(&program, dir, 12);
    assert_eq!(dumps.len(), 2, "expected a manual and a final dump: {dumps:?}");
    (program, dumps)
}

/// `tally report --text --show-bytes` of `dump`: its rows.
fn text_rows(dump: &Path) -> Vec<Row> {
    rows(&stdout(
        tally().args(["report", "--text", "--show-bytes"]).arg(dump),
    ))
}

/// The rows of `go tool pprof -top -unit=B` (values in bytes, `B` suffix).
fn pprof_rows(text: &str) -> Vec<(f64, f64, String)> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 6 {
                return None;
            }
            let number = |w: &str| w.trim_end_matches('B').parse::<f64>().ok();
            Some((number(words[0])?, number(words[3])?, words[5..].join(" ")))
        })
        .collect()
}

#[test]
fn pprof_reads_the_same_top_function() {
    let dir = tempfile::tempdir().unwrap();
    let (_program, dumps) = leak_dumps(dir.path());
    let dump = &dumps[1];
    let ours = text_rows(dump);
    let out = dir.path().join("leak.pb.gz");
    run(tally().args(["report", "--pprof"]).arg(&out).arg(dump));
    let gzip = std::fs::read(&out).unwrap();
    assert_eq!(&gzip[..2], &[0x1f, 0x8b], "not gzip");

    let text = stdout(
        go_pprof()
            .args(["-top", "-symbolize=none", "-unit=B", "-nodecount=20"])
            .arg("-sample_index=inuse_space")
            .arg(&out),
    );
    let theirs = pprof_rows(&text);
    assert!(!theirs.is_empty(), "{text}");
    assert_eq!(theirs[0].2, ours[0].name, "{text}");
    assert_close(theirs[0].0, ours[0].flat, 1.0, "top flat bytes");
    let main = theirs.iter().find(|r| r.2 == "main").expect("main");
    assert_close(main.1, row(&ours, "main").cum, 1.0, "main cum bytes");

    // The default sample type is inuse_space; all four are there; lines are kept.
    let text = stdout(go_pprof().args(["-raw", "-symbolize=none"]).arg(&out));
    assert!(
        text.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"),
        "{text}"
    );
    assert!(
        text.contains("PeriodType: space bytes") && text.contains("Period: 4096"),
        "{text}"
    );
    assert!(text.contains("leak_a ") && text.contains("leak.c:"), "{text}");
    let text = stdout(go_pprof().args(["-top", "-symbolize=none", "-lines"]).arg(&out));
    assert!(text.contains("leak.c:"), "{text}");

    // Objects agree with --inuse-objects.
    let objects = rows(&stdout(tally().args(["report", "--inuse-objects"]).arg(dump)));
    let text = stdout(
        go_pprof()
            .args(["-top", "-symbolize=none", "-sample_index=inuse_objects"])
            .arg(&out),
    );
    let (count, name) = text
        .lines()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words.len() >= 6 && words[5] == "leak_a").then(|| (words[0].parse::<f64>().unwrap(), words[5]))
        })
        .expect("leak_a row");
    assert_eq!(name, objects[0].name);
    assert!(
        (count - objects[0].flat).abs() <= 1.0,
        "{count} vs {}",
        objects[0].flat
    );
}

#[test]
fn pprof_of_a_difference() {
    let dir = tempfile::tempdir().unwrap();
    let (_program, dumps) = leak_dumps(dir.path());
    let out = dir.path().join("diff.pb.gz");
    run(tally()
        .args(["report", "--pprof"])
        .arg(&out)
        .arg("--base")
        .arg(&dumps[0])
        .arg(&dumps[1]));
    let text = stdout(go_pprof().args(["-top", "-symbolize=none", "-unit=B"]).arg(&out));
    let theirs = pprof_rows(&text);
    assert_eq!(theirs[0].2, "leak_b", "{text}");
}

#[test]
fn svg_call_graph_drawn_by_dot() {
    need("dot", "graphviz");
    let dir = tempfile::tempdir().unwrap();
    let (_program, dumps) = leak_dumps(dir.path());
    let svg = dir.path().join("graph.svg");
    run(tally().args(["report", "--svg"]).arg(&svg).arg(&dumps[1]));
    let text = std::fs::read_to_string(&svg).unwrap();
    let document = parse_xml(&text);
    assert!(document.root_element().has_tag_name("svg"));
    let texts: Vec<&str> = document
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    assert!(texts.contains(&"leak_a"), "{texts:?}");
    assert!(texts.contains(&"main"), "{texts:?}");
    // The biggest node has the biggest font.
    let size_of = |name: &str| -> f64 {
        document
            .descendants()
            .find(|n| n.has_tag_name("text") && n.text() == Some(name))
            .and_then(|n| n.attribute("font-size"))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(size_of("leak_a") > size_of("leak_b") && size_of("leak_b") > size_of("main"));
    // An edge from main to leak_a.
    let dot = stdout(tally().args(["report", "--dot", "-"]).arg(&dumps[1]));
    assert!(dot.starts_with("digraph "), "{dot}");
}

#[test]
fn flame_graph_is_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let (_program, dumps) = leak_dumps(dir.path());
    let svg = dir.path().join("flame.svg");
    run(tally().args(["report", "--flame"]).arg(&svg).arg(&dumps[1]));
    let text = std::fs::read_to_string(&svg).unwrap();
    let document = parse_xml(&text);
    let titles: Vec<&str> = document
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    // `leak_a (8,xxx,xxx bytes, 88.x%)`: the widest leaf.
    let leak_a = titles
        .iter()
        .find(|t| t.starts_with("leak_a "))
        .unwrap_or_else(|| panic!("{titles:?}"));
    assert!(leak_a.contains("bytes"), "{leak_a}");
}

#[test]
fn html_report_is_one_self_contained_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_program, dumps) = leak_dumps(dir.path());
    let html = dir.path().join("report.html");
    // A series of two: the growth chart comes too.
    run(tally()
        .args(["report", "--html"])
        .arg(&html)
        .arg(&dumps[0])
        .arg(&dumps[1]));
    let text = std::fs::read_to_string(&html).unwrap();
    let document = parse_xml(&text);
    assert_self_contained(&document);
    let first_row_name = document
        .descendants()
        .find(|n| n.attribute("id") == Some("top"))
        .and_then(|table| table.descendants().find(|n| n.has_tag_name("code")))
        .and_then(|code| code.text())
        .unwrap();
    assert_eq!(first_row_name, "leak_a");
    let svgs = document
        .descendants()
        .filter(|n| n.has_tag_name("svg") && !n.ancestors().skip(1).any(|a| a.has_tag_name("svg")))
        .count();
    assert_eq!(svgs, 2, "growth chart and flame graph");
    assert!(text.contains("Growth over the series"));

    // One dump: no chart. Several dumps are a series only for --html.
    run(tally().args(["report", "--html"]).arg(&html).arg(&dumps[1]));
    assert!(!std::fs::read_to_string(&html)
        .unwrap()
        .contains("Growth over the series"));
    let output = tally().arg("report").args(&dumps).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn html_report_renders_in_headless_chromium() {
    need("chromium", "chromium");
    let dir = tempfile::tempdir().unwrap();
    let (_program, dumps) = leak_dumps(dir.path());
    let html = dir.path().join("report.html");
    run(tally().args(["report", "--html"]).arg(&html).args(&dumps));
    let profile_dir = dir.path().join("chromium-profile");
    let dom = stdout(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile_dir.display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", html.display())),
    );
    let table = dom
        .split_once("id=\"top\"")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no top table in the rendered page:\n{dom}"));
    let first = table
        .split_once("<code>")
        .and_then(|(_, rest)| rest.split_once("</code>"))
        .map(|(name, _)| name)
        .unwrap();
    assert_eq!(first, "leak_a", "{dom}");
}
