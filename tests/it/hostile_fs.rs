//! A hostile file system under `output.dir`: full, read-only, `current` replaced by something
//! that is not ours, key files with loosened modes. Each test installs a valid set with a
//! normal renewal first, then breaks the file system and runs the real binary again.
//!
//! The full and read-only cases mount a small tmpfs (we run as root in the test VM); where
//! `mount` is refused, the full case falls back to `RLIMIT_FSIZE` in the child (forced with
//! `HOSTILE_FS_NO_MOUNT=1`), and the read-only case says why it is skipped.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::*;

/// A setup whose `output.dir` is `dir` instead of the temporary directory's `out`.
fn setup_with_output(emulator: &Emulator, dir: &Path) -> Setup {
    let setup = Setup::new(emulator, 2048, "", "");
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        &format!("dir = \"{}\"", setup.out.display()),
        &format!("dir = \"{}\"", dir.display()),
    );
    assert!(text.contains(&dir.display().to_string()), "{text}");
    std::fs::write(&setup.config, text).unwrap();
    Setup {
        out: dir.to_path_buf(),
        ..setup
    }
}

/// `snapshot(out)` without the bookkeeping every run rewrites (`state.json`, `.lock`): the
/// installed sets, `current` and their modes.
fn sets(out: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut s = snapshot(out);
    s.remove(&out.join("state.json"));
    s.remove(&out.join(".lock"));
    s
}

/// The one `eit-certd: ...` line of stderr.
fn error_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("eit-certd: ") && !l.starts_with("eit-certd: warning"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    lines[0].to_string()
}

fn assert_no_litter(out: &Path) {
    let litter = tmp_litter(out);
    assert!(litter.is_empty(), "litter: {litter:?}");
}

/// Fills the file system holding `dir` with a file until ENOSPC, then frees `free` bytes.
fn fill(dir: &Path, free: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xA5u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(free)).unwrap();
    f.sync_all().unwrap();
    path
}

#[test]
fn disk_full_during_install_keeps_the_installed_set() {
    let emulator = Emulator::start(&[]);
    // HOSTILE_FS_NO_MOUNT=1 runs the fallback where mounting works.
    let mounted = match std::env::var_os("HOSTILE_FS_NO_MOUNT") {
        Some(_) => Err("HOSTILE_FS_NO_MOUNT is set".to_string()),
        None => Tmpfs::mount("256k"),
    };
    let tmpfs = match mounted {
        Ok(t) => t,
        Err(reason) => {
            eprintln!("no tmpfs ({reason}); falling back to RLIMIT_FSIZE");
            return file_size_limit_during_install_keeps_the_installed_set(&emulator);
        }
    };
    let setup = setup_with_output(&emulator, &tmpfs.path.join("out"));
    assert_exit(&setup.run(&["renew"]), 0);
    let before = sets(&setup.out);
    // One page free: key.pem (written first, under 4 KiB) fits, cert.pem does not.
    fill(&tmpfs.path, 4096);

    let o = setup.run(&["renew", "--force"]);
    assert_exit(&o, 1);
    let error = error_line(&o);
    eprintln!("disk full: {error}");
    let named = format!("{}/", setup.out.display());
    assert!(
        error.contains(&named),
        "the error names no path under {named}: {error}"
    );
    assert!(error.contains("file system is full"), "{error}");
    assert!(
        !error.contains("key.pem"),
        "the filler left no room for key.pem; the test meant to fail a later file: {error}"
    );
    assert_eq!(
        sets(&setup.out),
        before,
        "a failed install changed the installed set"
    );
    assert_no_litter(&setup.out);
    check_current_set(&setup.out, &emulator.ca_pem())
        .unwrap()
        .expect("current");
    // With room again, the next renewal goes through.
    std::fs::remove_file(tmpfs.path.join("filler")).unwrap();
    assert_exit(&setup.run(&["renew", "--force"]), 0);
}

/// The fallback when tmpfs cannot be mounted: the child may not write files larger than 4000
/// bytes (combined.pem is larger), with SIGXFSZ ignored so the write fails with EFBIG instead
/// of killing the process.
fn file_size_limit_during_install_keeps_the_installed_set(emulator: &Emulator) {
    let setup = Setup::new(emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let before = sets(&setup.out);
    let mut command = Command::new(bin());
    command
        .arg("--config")
        .arg(&setup.config)
        .args(["renew", "--force"])
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = nix::libc::rlimit {
                rlim_cur: 4000,
                rlim_max: 4000,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            nix::libc::signal(nix::libc::SIGXFSZ, nix::libc::SIG_IGN);
            Ok(())
        });
    }
    let o = command.output().unwrap();
    assert_exit(&o, 1);
    let error = error_line(&o);
    let named = format!("{}/", setup.out.display());
    assert!(
        error.contains(&named),
        "the error names no path under {named}: {error}"
    );
    eprintln!("file size limit: {error}");
    assert!(error.contains("File too large"), "{error}");
    assert_eq!(
        sets(&setup.out),
        before,
        "a failed install changed the installed set"
    );
    assert_no_litter(&setup.out);
}

#[test]
fn read_only_output_dir_is_an_error_naming_it() {
    let emulator = Emulator::start(&[]);
    let tmpfs = match Tmpfs::mount("1m") {
        Ok(t) => t,
        Err(reason) => {
            // As root, chmod does not stop writes: without a mount there is no read-only dir.
            eprintln!("skipped: cannot mount a tmpfs to remount read-only ({reason})");
            return;
        }
    };
    let setup = setup_with_output(&emulator, &tmpfs.path.join("out"));
    assert_exit(&setup.run(&["renew"]), 0);
    let before = snapshot(&setup.out);
    tmpfs.remount("ro");

    let o = setup.run(&["renew", "--force"]);
    assert_exit(&o, 1);
    let error = error_line(&o);
    eprintln!("read-only: {error}");
    assert!(
        error.contains(&setup.out.display().to_string()),
        "the error does not name {}: {error}",
        setup.out.display()
    );
    assert!(error.to_lowercase().contains("read-only"), "{error}");
    assert_eq!(snapshot(&setup.out), before);
    // Reading still works: the installed set is valid.
    assert_exit(&setup.run(&["status"]), 0);
    tmpfs.remount("rw");
}

/// Runs `renew --force` and `status` against a `current` that is not our symlink; both must
/// refuse it, and nothing else under `out` may change.
fn refuses_current(setup: &Setup, what: &str) -> String {
    let before = sets(&setup.out);
    let generations = setup.generations();
    let o = setup.run(&["renew", "--force"]);
    assert_exit(&o, 1);
    let error = error_line(&o);
    assert!(error.contains("refusing to follow it"), "{error}");
    assert!(error.contains(what), "expected {what:?} in: {error}");
    assert!(
        error.contains(&setup.current().display().to_string()),
        "{error}"
    );
    assert_eq!(
        sets(&setup.out),
        before,
        "a refused current changed the output dir"
    );
    assert_eq!(setup.generations(), generations);
    assert_no_litter(&setup.out);

    let o = setup.run(&["status"]);
    assert_exit(&o, 3);
    let text = stdout(&o);
    let problem = text
        .lines()
        .find(|l| l.starts_with("problem"))
        .unwrap_or_else(|| panic!("status shows no problem:\n{text}"));
    assert!(
        problem.contains("refusing to follow it") && problem.contains(what),
        "{problem}"
    );
    let o = setup.run(&["status", "--json"]);
    assert_exit(&o, 3);
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["health"], "broken", "{json}");
    assert!(
        json["problem"].as_str().unwrap().contains("refusing"),
        "{json}"
    );
    error
}

#[test]
fn current_as_a_regular_file_is_refused_and_left_alone() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    std::fs::remove_file(setup.current()).unwrap();
    std::fs::write(setup.current(), "someone else's file\n").unwrap();
    refuses_current(&setup, "a regular file");
    assert_eq!(
        std::fs::read(setup.current()).unwrap(),
        b"someone else's file\n"
    );
}

#[test]
fn current_as_a_symlink_out_of_the_dir_is_refused_and_nothing_outside_is_touched() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    // Stands for /etc: a directory outside with something in it.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::create_dir(outside.path().join("ssl")).unwrap();
    let outside_before = snapshot(outside.path());

    std::fs::remove_file(setup.current()).unwrap();
    std::os::unix::fs::symlink(outside.path(), setup.current()).unwrap();
    let error = refuses_current(
        &setup,
        &format!("a symlink to {}", outside.path().display()),
    );
    eprintln!("symlink out: {error}");
    assert_eq!(snapshot(outside.path()), outside_before);

    // The same through `generations/..`: it names a generation but leaves the directory.
    let sibling = setup.tmp.path().join("outside");
    std::fs::create_dir(&sibling).unwrap();
    std::fs::remove_file(setup.current()).unwrap();
    std::os::unix::fs::symlink("generations/../../outside", setup.current()).unwrap();
    refuses_current(&setup, "a symlink to generations/../../outside");
    assert_eq!(std::fs::read_dir(&sibling).unwrap().count(), 0);
    assert_eq!(snapshot(outside.path()), outside_before);
}

#[test]
fn loosened_key_modes_are_tightened_by_the_next_renew() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let generations = setup.generations();
    let key = setup.current().join("key.pem");
    let combined = setup.current().join("combined.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&combined, std::fs::Permissions::from_mode(0o604)).unwrap();

    let o = setup.run(&["renew"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("nothing to do"), "{}", stdout(&o));
    let err = stderr(&o);
    let warned = |name: &str, mode: &str| {
        err.lines().any(|l| {
            l.contains("WARN")
                && l.contains(name)
                && l.contains(&format!("had mode {mode}; set it back to 600"))
        })
    };
    assert!(warned("key.pem", "644"), "no warning for key.pem:\n{err}");
    assert!(
        warned("combined.pem", "604"),
        "no warning for combined.pem:\n{err}"
    );
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&combined), 0o600);
    assert_eq!(
        setup.generations(),
        generations,
        "renew without --force renewed"
    );

    // Repaired: the next run has nothing to say.
    let o = setup.run(&["renew"]);
    assert_exit(&o, 0);
    assert!(!stderr(&o).contains("had mode"), "{}", stderr(&o));
}

/// An encrypted PEM planted as the installed key: on a terminal, OpenSSL asked for its pass
/// phrase ("Enter PEM pass phrase:") and `status` and `renew` blocked. Run under a pseudo
/// terminal (`script`), they must answer without asking.
#[test]
fn an_encrypted_key_on_disk_never_asks_for_a_pass_phrase() {
    if Command::new("script").arg("--version").output().is_err() {
        skipped!("util-linux `script` is not installed");
        return;
    }
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let key = setup.current().join("key.pem");
    let (ok, out) = run_tool(
        "openssl",
        &[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            setup.tmp.path().join("enc.pem").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let real = std::fs::canonicalize(&key).unwrap();
    std::fs::copy(setup.tmp.path().join("enc.pem"), &real).unwrap();
    for args in ["status", "renew"] {
        let line = format!("{} --config {} {args}", bin(), setup.config.display());
        let o = Command::new("timeout")
            .args(["30", "script", "-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert_ne!(o.status.code(), Some(124), "`{args}` blocked: {text}");
        assert!(!text.contains("pass phrase"), "`{args}`: {text}");
    }
}

/// Directories on the way count (issue: owners on the way were never checked). The parent of
/// `output.dir` owned by another user: that user could swap `out` for a link and have root
/// write `.lock`, `state.json` and a private key where they chose. A config file in a
/// directory everyone may write: anyone could rename another file over it. A sticky
/// directory such as /tmp stays fine for entries we own.
#[test]
fn directories_on_the_way_that_others_control_are_refused() {
    let emulator = Emulator::start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let theirs = scratch.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let setup = setup_with_output(&emulator, &theirs.join("out"));
    for args in [&["renew"][..], &["check"][..]] {
        let o = setup.run(args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            text.contains(&format!("{} is owned by uid 65534", theirs.display())),
            "{args:?}: {text}"
        );
    }
    assert!(!theirs.join("out").exists(), "nothing written below it");

    // The config file's directory.
    let open_dir = scratch.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = open_dir.join("config.toml");
    std::fs::copy(&setup.config, &config).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        stdout(&o).contains(&format!(
            "config file: {} is writable by everyone (mode 777) and not sticky",
            open_dir.display()
        )),
        "{}",
        stdout(&o)
    );
    // Sticky (as /tmp): others cannot rename over what we own.
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let o = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert!(!stdout(&o).contains("not sticky"), "{}", stdout(&o));
}

/// A planted generation with sequence u64::MAX made the next id wrap to 0 (and a debug build
/// panic): it is not one of ours, and the next renewal numbers on from the real ones.
#[test]
fn a_planted_generation_with_the_largest_sequence_does_not_wrap_the_next() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let planted = setup
        .out
        .join("generations")
        .join(format!("{}-20261123T190511Z-BB", u64::MAX));
    std::fs::create_dir(&planted).unwrap();
    assert_exit(&setup.run(&["renew", "--force"]), 0);
    let current = std::fs::read_link(setup.current()).unwrap();
    assert!(
        current.to_string_lossy().starts_with("generations/000002-"),
        "{}",
        current.display()
    );
    assert!(planted.exists(), "not ours to remove");
}
