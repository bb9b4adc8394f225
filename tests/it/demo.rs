//! The README's first command: `eit-certd demo` must work on a fresh machine, with no config,
//! write nothing outside its own temporary directory, read as a lesson (steps without log lines
//! between them, commands that work when pasted, what to do next), and clean up unless `--keep`.

use std::process::Command;

use crate::common::*;

fn demo(args: &[&str], tmpdir: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .arg("demo")
        .args(args)
        .env("TMPDIR", tmpdir)
        .env("EIT_CERTD_CONFIG", "/nonexistent/should-not-be-read.toml")
        .output()
        .unwrap()
}

fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[test]
fn demo_keep_renews_rotates_three_times_and_leaves_commands_that_work() {
    let tmpdir = tempfile::tempdir().unwrap();
    let o = demo(&["--keep"], tmpdir.path());
    assert_exit(&o, 0);
    let out = stdout(&o);
    for step in [
        "1. started",
        "2. `eit-certd renew`",
        "3. validated and installed",
        "4. `eit-certd run`",
        "5. a last `eit-certd renew --force`",
        "6. `eit-certd status`",
        "sudo eit-certd init",
        "sudo eit-certd check --online",
        "Zonal shares (IPsec with strongSwan)",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    assert_eq!(out.matches("rotation ").count(), 3, "{out}");
    // Each hook run is reported once (the demo's line), not also as a log line.
    let hooks = out.matches("hook announce said: new serial").count();
    assert_eq!(
        hooks, 5,
        "one per renewal (first, 3 rotations, last): {out}"
    );
    assert!(out.contains("status        valid"), "{out}");
    // Logs went to the file, not between the steps.
    for noise in [" INFO ", " DEBUG ", " WARN "] {
        assert!(!out.contains(noise), "log line on stdout: {out}");
    }
    let err = stderr(&o);
    assert!(!err.contains(" INFO "), "log line on stderr: {err}");

    let dirs = entries(tmpdir.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let root = &dirs[0];
    let log = std::fs::read_to_string(root.join("demo.log")).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a file: {log:?}");

    // The printed commands work when pasted, after the demo has ended.
    let paste: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("openssl ") || l.starts_with("eit-certd --config"))
        .collect();
    assert_eq!(paste.len(), 3, "{out}");
    for line in paste {
        let words: Vec<&str> = line.split_whitespace().collect();
        let program = if words[0] == "eit-certd" {
            bin()
        } else {
            words[0]
        };
        let o = Command::new(program).args(&words[1..]).output().unwrap();
        assert!(o.status.success(), "{line}: {}{}", stdout(&o), stderr(&o));
        if words[0] == "eit-certd" {
            assert!(stdout(&o).contains("status        valid"), "{}", stdout(&o));
        }
    }
}

#[test]
fn demo_without_keep_leaves_nothing_behind() {
    let tmpdir = tempfile::tempdir().unwrap();
    let o = demo(&[], tmpdir.path());
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("demo --keep"), "{out}");
    assert!(out.contains("6. `eit-certd status`"), "{out}");
    assert_eq!(entries(tmpdir.path()), Vec::<std::path::PathBuf>::new());
}
