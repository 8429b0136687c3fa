//! git under Tally: init, add, commit, log, diff, gc and fsck in a fresh repository give the same
//! output as without Tally, down to the commit hashes.
//!
//! With fixed author, committer, dates and content, commit ids are a SHA-1 over everything git
//! wrote, so equal hashes mean every object was stored byte-identically. `gc` runs
//! `pack-objects` (threaded delta search, zlib) and `fsck --strict` re-reads and re-hashes every
//! object. Every step runs as its own process tree, so each one must show Tally's stats.

use std::fmt::Write as _;
use std::path::Path;
use tally_tests::{
    git_command, record_git_step, require_tool, run, Mode, Outcome, Rng, ScratchDir, DEFAULT_TIMEOUT,
};

/// HEAD after the scripted history; fixed by the content and the identity and dates that
/// `git_command` sets.
const EXPECTED_HEAD: &str = "7ba0a87e8755886c965250f31208bd448d99d5e7";

/// Writes `count` text files of varied size under `repo/src`, derived from `seed`.
fn write_files(repo: &Path, seed: u64, count: usize) {
    let mut rng = Rng::new(seed);
    let dir = repo.join("src");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..count {
        let mut text = String::new();
        let lines = 1 + rng.below(400);
        for line in 0..lines {
            let _ = writeln!(text, "file {i} line {line}: {:016x}", rng.next_u64());
        }
        std::fs::write(dir.join(format!("f{i:03}.txt")), text).unwrap();
    }
}

/// Runs the whole scripted session in `dir` and returns its transcript.
fn session(git_exe: &Path, dir: &Path, mode: Mode) -> (String, Vec<Outcome>) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let mut transcript = String::new();
    let mut outcomes = Vec::new();
    let mut step = |args: &[&str]| {
        let outcome = run(git_command(git_exe, &repo, dir, args), mode, DEFAULT_TIMEOUT);
        record_git_step(&mut transcript, &mut outcomes, args, outcome);
    };
    step(&["init", "-q", "-b", "main", "--object-format=sha1"]);
    write_files(&repo, 1, 150);
    step(&["add", "-A"]);
    step(&["commit", "-q", "-m", "initial import"]);
    // Second commit: rewrite a third of the files, delete some, add new ones.
    write_files(&repo, 2, 50);
    for i in (140..150).step_by(2) {
        std::fs::remove_file(repo.join(format!("src/f{i:03}.txt"))).unwrap();
    }
    std::fs::write(repo.join("README"), "Tally test repository\n".repeat(100)).unwrap();
    step(&["add", "-A"]);
    step(&["commit", "-q", "-m", "rewrite, delete and add"]);
    step(&["log", "--stat", "--format=%H %an <%ae> %ad%n%s"]);
    step(&["log", "-p", "-1", "--format=%H", "--", "src/f007.txt", "README"]);
    step(&["diff", "--numstat", "HEAD~1", "HEAD"]);
    step(&["grep", "-c", "line 1[0-9]:", "HEAD", "--", "src/f01*.txt"]);
    step(&["gc", "-q", "--prune=now"]);
    step(&["fsck", "--full", "--strict", "--no-progress"]);
    step(&["rev-parse", "HEAD", "HEAD^{tree}", "HEAD~1"]);
    (transcript, outcomes)
}

#[test]
fn git_session_runs_identically_under_tally() {
    let git_exe = require_tool("git", "git");
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "git");

    let (plain, plain_outcomes) = session(&git_exe, &scratch.subdir("plain"), Mode::Plain);
    let rev_parse = plain_outcomes.last().expect("steps ran").stdout_text();
    assert_eq!(
        rev_parse.lines().next(),
        Some(EXPECTED_HEAD),
        "plain git gave an unexpected HEAD: the scripted repository is not deterministic?"
    );

    let (preloaded, outcomes) = session(&git_exe, &scratch.subdir("preloaded"), Mode::Preloaded);
    tally_tests::assert_bytes_eq(
        "transcript",
        "git session",
        plain.as_bytes(),
        preloaded.as_bytes(),
    );
    for outcome in &outcomes {
        outcome.assert_used_tally();
    }
}
