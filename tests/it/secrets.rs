//! Secrets stay secret at the most verbose log level: the access token and the private key
//! never show up in what the binary prints, what it writes besides the key files, what hooks
//! see, or what other users can read from /proc.
//!
//! With `RUST_LOG=trace` (every crate, hyper and reqwest included): a one-shot `renew`, a daemon
//! that rotates at least twice (emulator `--max-lifetime 6s`) with one hook that fails and one
//! that dumps its environment, and `eit-certd token`. Then none of these holds a token (every
//! token the emulator issues, identity or IAM, starts with the base64 of `{"alg":` —
//! `eyJhbGciOi` — and the one `token` printed is looked for literally too) or any base64 line
//! of any key.pem that was installed:
//! - stdout and stderr of `renew`, of the daemon and of `token` (its stdout excepted: printing
//!   the token is its job);
//! - state.json and the metrics file (`output.metrics_file`);
//! - the environment the hook saw;
//! - `/proc/PID/cmdline` and `/proc/PID/environ` of the daemon, read while it runs.
//!
//! The emulator's own output is not checked: it is the service, which holds the tokens.

use std::time::Duration;

use crate::common::*;

/// The base64url of `{"alg":`, the start of every JWT-shaped token the emulator issues
/// (`src/emulator/ids.rs`: `eyJhbGciOiJSUzI1NiIs…` for identity, `eyJhbGciOiJIUzI1NiIs…` for
/// IAM tokens).
const TOKEN_PREFIX: &str = "eyJhbGciOi";

const TRACE: &[(&str, &str)] = &[("RUST_LOG", "trace")];

/// The base64 lines of every key.pem under `out/generations`.
fn key_lines(setup: &Setup) -> Vec<String> {
    let mut lines = Vec::new();
    for generation in setup.generations() {
        let key = setup
            .out
            .join("generations")
            .join(generation)
            .join("key.pem");
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(
            text.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{text:.40}"
        );
        lines.extend(
            text.lines()
                .filter(|l| !l.starts_with("-----") && !l.is_empty())
                .map(str::to_string),
        );
    }
    lines
}

/// Panics naming `what` if `haystack` holds a token or one of `key_lines`.
fn assert_clean(what: &str, haystack: &[u8], token: &str, key_lines: &[String]) {
    let text = String::from_utf8_lossy(haystack);
    if let Some(at) = text.find(TOKEN_PREFIX) {
        let end = (at + 80).min(text.len());
        panic!(
            "{what} holds a token: {:?}",
            text.get(at..end).unwrap_or("…")
        );
    }
    assert!(
        !text.contains(token),
        "{what} holds the token `token` printed"
    );
    for line in key_lines {
        assert!(
            !text.contains(line.as_str()),
            "{what} holds a line of a private key: {line}"
        );
    }
}

#[test]
fn no_token_or_private_key_leaks_at_trace_level() {
    let emulator = Emulator::start(&["--max-lifetime", "6s"]);
    let scratch = tempfile::tempdir().unwrap();
    let dump = scratch.path().join("hook-env.txt");
    let hooks = format!(
        "[[hooks]]\nname = \"fails\"\ncommand = [\"/bin/sh\", \"-c\", 'echo failing on purpose >&2; exit 1']\n\n\
         [[hooks]]\nname = \"dump-env\"\ncommand = [\"/bin/sh\", \"-c\", 'env >> \"$DUMP\"; echo ---- >> \"$DUMP\"']\n\
         env = {{ DUMP = \"{}\" }}\n",
        dump.display()
    );
    let setup = Setup::new(&emulator, 2048, "", &hooks);
    let metrics = setup.tmp.path().join("eit-certd.prom");
    // Keep every generation, so every key that was ever installed can be looked for.
    setup.add_output_settings(&format!(
        "keep = 20\nmetrics_file = \"{}\"",
        metrics.display()
    ));

    // A one-shot renewal.
    let renew = setup.run_with_env(&["renew"], TRACE);
    // Installed, but the failing hook makes it exit 1.
    assert_exit(&renew, 1);
    assert!(
        stderr(&renew).contains("TRACE"),
        "RUST_LOG=trace did not reach the binary:\n{}",
        stderr(&renew)
    );
    assert!(
        stderr(&renew).contains("hook fails failed"),
        "{}",
        stderr(&renew)
    );

    // A daemon rotating twice, with /proc read while it runs.
    let mut daemon = DaemonProc::start_with_env(&setup, TRACE);
    let proc_dir = format!("/proc/{}", daemon.pid());
    let mut proc_views: Vec<(String, Vec<u8>)> = Vec::new();
    wait_for(Duration::from_secs(40), "two rotations", || {
        for file in ["cmdline", "environ"] {
            let path = format!("{proc_dir}/{file}");
            if let Ok(bytes) = std::fs::read(&path) {
                proc_views.push((path, bytes));
            }
        }
        // Wait for the hooks of the third install too: a stop in the middle of an attempt
        // abandons its remaining hooks.
        let dumped = std::fs::read_to_string(&dump).unwrap_or_default();
        (setup.generations().len() >= 3 && dumped.matches("EIT_SERIAL=").count() >= 3).then_some(())
    });
    assert!(
        proc_views
            .iter()
            .any(|(p, b)| p.ends_with("environ") && !b.is_empty()),
        "could not read the daemon's /proc/PID/environ"
    );
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let code = daemon.wait_exit(Duration::from_secs(10));
    if code != Some(0) {
        let log = daemon.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "the daemon did not stop (exit {code:?}); last log lines, newest first:\n{}",
            tail.join("\n")
        );
    }
    let daemon_log = std::fs::read(&daemon.log).unwrap();
    if let Ok(keep) = std::env::var("SECRETS_KEEP_LOG") {
        std::fs::write(keep, &daemon_log).unwrap();
    }
    assert!(
        String::from_utf8_lossy(&daemon_log).contains("TRACE"),
        "the daemon did not log at trace level"
    );

    // `eit-certd token`: its stdout is the token, the one secret it may print.
    let token_run = setup.run_with_env(&["token"], TRACE);
    assert_exit(&token_run, 0);
    let token = stdout(&token_run).trim().to_string();
    assert!(
        token.starts_with(TOKEN_PREFIX) && token.len() > 40,
        "`token` printed {token:?}: the prefix this test looks for does not match"
    );

    let keys = key_lines(&setup);
    assert!(
        setup.generations().len() >= 3 && keys.len() >= 3 * 20,
        "{} generations, {} key lines",
        setup.generations().len(),
        keys.len()
    );
    let hook_env = std::fs::read(&dump).unwrap();
    assert!(
        String::from_utf8_lossy(&hook_env)
            .matches("EIT_SERIAL=")
            .count()
            >= 3,
        "the dump hook did not run for every install"
    );
    let state = std::fs::read(setup.out.join("state.json")).unwrap();
    let metrics_text = std::fs::read(&metrics).unwrap();
    assert!(!metrics_text.is_empty());

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("renew's stdout".into(), renew.stdout.clone()),
        ("renew's stderr".into(), renew.stderr.clone()),
        ("the daemon's stdout and stderr".into(), daemon_log),
        ("token's stderr".into(), token_run.stderr.clone()),
        ("state.json".into(), state),
        ("the metrics file".into(), metrics_text),
        ("the hook's environment".into(), hook_env),
    ];
    haystacks.extend(proc_views);
    for (what, bytes) in &haystacks {
        assert_clean(what, bytes, &token, &keys);
    }
    eprintln!(
        "secrets: {} generations, {} key lines and the token prefix checked against {} outputs \
         ({} KiB of trace logs)",
        setup.generations().len(),
        keys.len(),
        haystacks.len(),
        (haystacks[1].1.len() + haystacks[2].1.len() + haystacks[3].1.len()) / 1024
    );
}
