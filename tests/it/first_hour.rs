//! The operator's first hour (issue 15): what a newcomer meets when following the README.
//! Non-root `status`, log styling for pipes/terminals/journald, `init` on a fresh machine,
//! config type errors in words, output.dir on a virtual file system, and reload confirmation.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

fn as_nobody(setup: &Setup, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(bin())
        .arg("--config")
        .arg(&setup.config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn status_without_root_says_the_key_was_not_checked_instead_of_broken() {
    if !nix::unistd::geteuid().is_root() {
        skipped!("status_without_root: needs root to install a root-owned set");
        return;
    }
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    // What a package install looks like: readable config and directories, the key 0600 root.
    std::fs::set_permissions(setup.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&setup.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = setup.current().join("key.pem");
    assert_eq!(
        mode(&key) & 0o077,
        0,
        "the key must not be readable by others"
    );

    let o = as_nobody(&setup, &["status"]);
    let out = stdout(&o);
    assert_exit(&o, 0);
    assert!(out.contains("status        valid"), "{out}");
    assert!(!out.contains("BROKEN"), "{out}");
    assert!(
        out.contains("NOT CHECKED") && out.contains("uid 65534") && out.contains("key.pem"),
        "status must say which check it could not make: {out}"
    );
    let o = as_nobody(&setup, &["status", "--json"]);
    assert_exit(&o, 0);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["health"], "valid");
    assert!(json["installed"]["key_matches"].is_null(), "{json}");
    assert!(json["installed"]["key_unchecked"]
        .as_str()
        .unwrap()
        .contains("permission denied"));

    // Root still checks the key, and a wrong key is still BROKEN (the tri-state did not
    // turn every failure into "unchecked").
    let o = setup.run(&["status", "--json"]);
    assert_exit(&o, 0);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["installed"]["key_matches"], true);
    let real = std::fs::canonicalize(&key).unwrap();
    std::fs::write(
        &real,
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let o = setup.run(&["status"]);
    assert_exit(&o, 3);
    assert!(stdout(&o).contains("BROKEN"), "{}", stdout(&o));
}

/// The first log line of a `renew` run with `env`, on a pipe.
fn renew_log(setup: &Setup, env: &[(&str, &str)]) -> String {
    let o = setup.run_with_env(&["renew", "--force"], env);
    assert_exit(&o, 0);
    stderr(&o)
}

#[test]
fn logs_have_no_colour_on_a_pipe_and_no_timestamps_under_journald() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let log = renew_log(&setup, &[]);
    assert!(!log.is_empty());
    assert!(!log.contains('\x1b'), "ANSI codes on a pipe: {log:?}");
    let first = log.lines().next().unwrap();
    assert!(
        first.starts_with("20") && first.as_bytes().get(4) == Some(&b'-'),
        "a timestamp outside journald: {first:?}"
    );
    let log = renew_log(&setup, &[("JOURNAL_STREAM", "8:12345")]);
    for line in log.lines() {
        assert!(
            !line.starts_with("20"),
            "journald adds timestamps; ours doubles them: {line:?}"
        );
    }
    assert!(log.contains("INFO"), "{log}");

    // On a terminal: colour, unless NO_COLOR. `script` gives the child a pty.
    if Command::new("script").arg("--version").output().is_err() {
        skipped!("logs on a terminal: `script` (util-linux) is not installed");
        return;
    }
    let on_tty = |no_color: bool| {
        let cmd = format!(
            "{} --config {} status --json >/dev/null; {} --config {} renew --force >/dev/null",
            bin(),
            setup.config.display(),
            bin(),
            setup.config.display()
        );
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::null());
        c.env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let o = c.output().unwrap();
        assert_exit(&o, 0);
        stdout(&o)
    };
    let coloured = on_tty(false);
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_tty(true);
    assert!(plain.contains("INFO"), "{plain:?}");
    assert!(!plain.contains("\x1b["), "NO_COLOR ignored: {plain:?}");
}

#[test]
fn init_creates_the_missing_directory_and_a_readable_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("etc/eit-certd/config.toml");
    let init = || {
        Command::new(bin())
            .arg("--config")
            .arg(&path)
            .arg("init")
            .output()
            .unwrap()
    };
    let o = init();
    assert_exit(&o, 0);
    assert_eq!(mode(&path) & 0o777, 0o644);
    assert_eq!(mode(path.parent().unwrap()) & 0o777, 0o755);
    assert!(stdout(&o).contains("wrote"), "{}", stdout(&o));
    // Written once; a second init leaves the file alone (exit 2, says so).
    let o = init();
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("left as it is"), "{}", stderr(&o));
}

fn refused(toml: &str, subcommand: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let o = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .arg(subcommand)
        .output()
        .unwrap();
    assert_exit(&o, 2);
    format!("{}{}", stdout(&o), stderr(&o))
}

#[test]
fn config_type_errors_name_the_key_and_the_type_in_words() {
    let err = refused("[certificate]\nkey_bits = \"4096\"\n", "check");
    assert!(
        err.contains("certificate.key_bits must be a whole number, got the string \"4096\""),
        "{err}"
    );
    assert!(!err.contains("i64"), "Rust type names are jargon: {err}");
    let err = refused("[metadata]\nversion = 2025-08-26\n", "check");
    assert!(
        err.contains("metadata.version must be a string in quotes, got an unquoted date")
            && err.contains("version = \"2025-08-26\""),
        "{err}"
    );
    let err = refused("[output]\nkeep = true\n", "check");
    assert!(
        err.contains("output.keep must be") && err.contains("got true"),
        "{err}"
    );
}

#[test]
fn check_refuses_an_output_dir_on_proc() {
    let err = refused("[output]\ndir = \"/proc/x\"\n", "check");
    assert!(err.contains("output.dir") && err.contains("proc"), "{err}");
}

#[test]
fn sighup_after_a_fixed_config_confirms_the_reload() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let good = std::fs::read_to_string(&setup.config).unwrap();
    let mut daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(60), "the first install", || {
        current_serial(&setup)
    });
    std::fs::write(&setup.config, format!("{good}\n[bogus]\nx = 1\n")).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(20), "the bad config refused", || {
        daemon
            .log_text()
            .contains("keeping the running configuration")
            .then_some(())
    });
    std::fs::write(&setup.config, &good).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(20), "the reload confirmed", || {
        daemon
            .log_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    assert_eq!(
        daemon.wait_exit(Duration::ZERO),
        None,
        "{}",
        daemon.log_text()
    );
}

#[test]
fn man_page_has_every_subcommand_every_config_key_and_real_sections() {
    let o = Command::new(bin()).arg("man").output().unwrap();
    assert_exit(&o, 0);
    let page = stdout(&o);
    // As a reader sees it: roff escapes (\-) gone.
    let plain = page
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "");
    for section in [
        ".SH SYNOPSIS",
        ".SH COMMANDS",
        ".SH EXIT STATUS",
        ".SH FILES",
        ".SH SIGNALS",
        ".SH ENVIRONMENT",
        ".SH CONFIGURATION",
        ".SH EXAMPLES",
    ] {
        assert!(page.contains(section), "missing {section}");
    }
    // Every subcommand `--help` lists has its synopsis.
    let help = stdout(&Command::new(bin()).arg("--help").output().unwrap());
    let subcommands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&c| c != "help")
        .collect();
    assert!(subcommands.len() >= 10, "{subcommands:?}");
    for c in &subcommands {
        assert!(
            plain.contains(&format!(".SS \"eit-certd {c}")),
            "no synopsis for {c}"
        );
    }
    // Every key of the example config (the file `init` writes), under its table.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml"),
    )
    .unwrap();
    let mut keys = 0;
    for line in example.lines() {
        let body = line.trim().trim_start_matches('#').trim();
        if let Some((key, _)) = body.split_once(" = ") {
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys += 1;
                assert!(
                    plain.contains(&format!(".TP\n{key} = ")),
                    "config key {key} missing"
                );
            }
        } else if body.starts_with('[') {
            assert!(
                plain.contains(&format!(".SS \"{body}\"")),
                "table {body} missing"
            );
        }
    }
    assert!(keys >= 25, "{keys}");
    // No references to pages that are not shipped (clap_mangen's eit-certd-run(1) and friends).
    assert!(
        !plain.contains("eit-certd-run"),
        "refers to eit-certd-<cmd>(1) pages"
    );
    // The roff is well formed: groff warns about nothing.
    let Ok(groff) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        skipped!("man page roff check: groff is not installed");
        return;
    };
    use std::io::Write;
    let mut groff = groff;
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let o = groff.wait_with_output().unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn cloud_init_example_writes_a_config_that_loads() {
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cloud-init.yaml"),
    )
    .unwrap();
    // The literal block after `path: /etc/eit-certd/config.toml`, de-indented (no YAML crate:
    // `cloud-init schema` in .ci/run checks the YAML itself).
    let start = yaml.find("path: /etc/eit-certd/config.toml").unwrap();
    let block = &yaml[start..];
    let body = &block[block.find("content: |\n").unwrap() + "content: |\n".len()..];
    let indent = body.len() - body.trim_start_matches(' ').len();
    let toml: String = body
        .lines()
        .take_while(|l| l.trim().is_empty() || l.starts_with(&" ".repeat(indent)))
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect();
    assert!(
        toml.contains("[metadata]") && toml.contains("https://"),
        "{toml}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    let out = tmp.path().join("out");
    // The same file with output.dir moved into the sandbox (the rest as the instance sees it).
    std::fs::write(
        &path,
        toml.replace("/var/lib/eit-certd", out.to_str().unwrap()),
    )
    .unwrap();
    let o = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .args(["status", "--json"])
        .output()
        .unwrap();
    // Loaded (not exit 2), and nothing is installed yet.
    assert_exit(&o, 3);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["health"], "missing");
}

#[test]
fn check_refuses_an_output_dir_on_a_read_only_mount() {
    let tmpfs = match Tmpfs::mount("1m") {
        Ok(t) => t,
        Err(reason) => {
            skipped!("check_refuses_an_output_dir_on_a_read_only_mount: {reason}");
            return;
        }
    };
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("config.toml");
    let out = tmpfs.path.join("out");
    std::fs::write(&path, format!("[output]\ndir = \"{}\"\n", out.display())).unwrap();
    let check = || {
        Command::new(bin())
            .arg("--config")
            .arg(&path)
            .arg("check")
            .output()
            .unwrap()
    };
    // Writable first: the same directory passes, so the refusal below is the mount's doing.
    let o = check();
    assert!(
        !stdout(&o).contains("read-only"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    tmpfs.remount("ro");
    let o = check();
    tmpfs.remount("rw");
    assert_exit(&o, 2);
    let text = stdout(&o);
    assert!(
        text.contains("output.dir") && text.contains("read-only"),
        "{text}"
    );
}
