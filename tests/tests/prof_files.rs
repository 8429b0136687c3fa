//! Profile files under `LD_PRELOAD`: a dump is the writer's own, mode 0600, even in a shared
//! sticky directory where another user planted a file or a symlink at the temporary name the
//! dump used to take (`<final name>.tmp`) or at the final name; and a dump that fails says why
//! in words, once, not once per dump.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use tally_tests::{compile_c, describe_status, libtally_so, ScratchDir};

/// `nobody`, the other user files are planted as when the test runs as root.
const NOBODY: u32 = 65534;

/// Runs `crash wait` with the final profile going to `<dir>/p`; once it is running, calls
/// `plant(pid)`, then lets it exit. Returns its stderr.
fn run_and_plant(exe: &Path, dir: &Path, plant: impl FnOnce(u32)) -> String {
    let mut child = Command::new(exe)
        .arg("wait")
        .env("LD_PRELOAD", libtally_so())
        .env(
            "TALLY_CONF",
            format!(
                "prof:true,lg_prof_sample:12,prof_final:true,prof_prefix:{}/p",
                dir.display()
            ),
        )
        .env_remove("MALLOC_CONF")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crash wait");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "crash: ready\n");
    plant(child.id());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}\n{stderr}", describe_status(status));
    stderr
}

/// Makes `path` (a file, or with `link` a symlink itself) another user's, when we can.
fn give_away(path: &Path, root: bool, link: bool) {
    if root {
        if link {
            std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        } else {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
}

/// A file with `text`, mode 0666, another user's.
fn plant_file(path: &Path, text: &str, root: bool) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
    give_away(path, root, false);
}

/// Checks the final profile of process `pid` in `dir`: a regular file, ours, mode 0600, a
/// valid profile; and no temporary file of ours left behind.
fn assert_ours(dir: &Path, pid: u32, uid: u32, planted_tmp: &str) {
    let path = dir.join(format!("p.{pid}.0.f.heap"));
    let meta = std::fs::symlink_metadata(&path)
        .unwrap_or_else(|e| panic!("no final profile {}: {e}", path.display()));
    assert!(
        meta.file_type().is_file(),
        "{} is not a regular file",
        path.display()
    );
    assert_eq!(meta.uid(), uid, "the profile is not the writer's");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    tally_format::parse(&std::fs::read(&path).unwrap()).expect("a valid profile");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.ends_with(".tmp") || name == planted_tmp,
            "temporary file {name} left behind"
        );
    }
}

#[test]
fn planted_files_and_symlinks_in_a_sticky_directory_are_not_used() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-files");
    let exe = compile_c("crash.c", scratch.path());
    // Two shared directories, like /tmp (sticky, anyone may create names), one per case.
    let sticky = |name: &str| {
        let dir = scratch.subdir(name);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        dir
    };
    let shared = sticky("shared-file");
    let uid = std::fs::metadata(&shared).unwrap().uid();
    let root = uid == 0;

    // A file planted at the temporary name the dump used to take.
    let mut planted = String::new();
    let stderr = run_and_plant(&exe, &shared, |pid| {
        planted = format!("p.{pid}.0.f.heap.tmp");
        plant_file(&shared.join(&planted), "planted", root);
    });
    assert_eq!(stderr, "");
    let pid: u32 = planted.split('.').nth(1).unwrap().parse().unwrap();
    assert_ours(&shared, pid, uid, &planted);
    let meta = std::fs::metadata(shared.join(&planted)).unwrap();
    assert_eq!(std::fs::read_to_string(shared.join(&planted)).unwrap(), "planted");
    assert_eq!(meta.uid(), if root { NOBODY } else { uid });

    // Symlinks planted at the temporary name and at the final name.
    let shared = sticky("shared-symlinks");
    let victim = shared.join("victim");
    let victim_final = shared.join("victim-final");
    plant_file(&victim, "victim", root);
    plant_file(&victim_final, "victim-final", root);
    let mut planted = String::new();
    let stderr = run_and_plant(&exe, &shared, |pid| {
        planted = format!("p.{pid}.0.f.heap.tmp");
        let link = shared.join(&planted);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        give_away(&link, root, true);
        let link = shared.join(format!("p.{pid}.0.f.heap"));
        std::os::unix::fs::symlink(&victim_final, &link).unwrap();
        give_away(&link, root, true);
    });
    assert_eq!(stderr, "");
    let pid: u32 = planted.split('.').nth(1).unwrap().parse().unwrap();
    assert_ours(&shared, pid, uid, &planted);
    assert!(std::fs::symlink_metadata(shared.join(&planted))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
    assert_eq!(std::fs::read_to_string(&victim_final).unwrap(), "victim-final");
    for v in [&victim, &victim_final] {
        let meta = std::fs::metadata(v).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o666);
        assert_eq!(meta.uid(), if root { NOBODY } else { uid });
    }
}

#[test]
fn a_failing_dump_is_reported_once_in_words() {
    let scratch = ScratchDir::new(env!("CARGO_TARGET_TMPDIR"), "prof-fail");
    let exe = compile_c("crash.c", scratch.path());
    let prefix = scratch.join("no-such-dir").join("p");
    let out = Command::new(&exe)
        .arg("exit")
        .env("LD_PRELOAD", libtally_so())
        .env(
            "TALLY_CONF",
            format!(
                "prof:true,lg_prof_sample:10,lg_prof_interval:16,prof_gdump:true,prof_final:true,prof_prefix:{}",
                prefix.display()
            ),
        )
        .env_remove("MALLOC_CONF")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_status(out.status));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "tally: cannot write a heap profile with prefix {}: No such file or directory \
             (the same failure again is not reported)\n",
            prefix.display()
        )
    );
}
