//! `eit-certd run` against the real emulator: rotations, hooks, signals, repair, one instance.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;
use nix::sys::signal::Signal;

fn generation_count(setup: &Setup) -> usize {
    setup.generations().len()
}

fn openssl_field(cert: &std::path::Path, flag: &str) -> String {
    let (ok, out) = run_tool(
        "openssl",
        &["x509", "-noout", flag, "-in", cert.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    out.trim().split_once('=').unwrap().1.to_string()
}

fn parse_openssl_date(s: &str) -> time::OffsetDateTime {
    // e.g. "Nov 23 19:25:55 2026 GMT"
    let fmt = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
    );
    time::PrimitiveDateTime::parse(s, &fmt)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .assume_utc()
}

#[test]
fn rotates_before_expiry_and_runs_hooks_with_the_documented_environment() {
    let emulator = Emulator::start(&["--max-lifetime", "6s"]);
    let hook_dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        "[[hooks]]\nname = \"record\"\ncommand = [\"/bin/sh\", \"-c\", 'env > \"$RECORD_DIR/$EIT_SERIAL.env\"']\n\
         env = {{ RECORD_DIR = \"{}\" }}\n",
        hook_dir.path().display()
    );
    let setup = Setup::new(&emulator, 2048, "", &format!("{hooks}\n"));
    // Keep every generation so each one can be checked afterwards.
    setup.add_output_settings("keep = 20");
    let daemon = DaemonProc::start(&setup);
    // The hooks run after each install: stop only once four of them have run.
    wait_for(
        Duration::from_secs(30),
        "4 generations and their hooks",
        || {
            let hook_runs = std::fs::read_dir(hook_dir.path()).ok()?.count();
            (generation_count(&setup) >= 4 && hook_runs >= 4).then_some(())
        },
    );
    drop(daemon);

    let gens = setup.generations();
    let mut previous_not_after: Option<time::OffsetDateTime> = None;
    let mut previous_serial = String::new();
    for g in &gens[..4] {
        let dir = setup.out.join("generations").join(g);
        let cert = dir.join("cert.pem");
        let issued_at = parse_openssl_date(&openssl_field(&cert, "-startdate")).unix_timestamp();
        let (ok, out) = openssl_verify(&emulator.ca_pem(), &dir, Some(issued_at));
        assert!(ok, "generation {g} does not verify: {out}");
        let serial = openssl_field(&cert, "-serial");
        let not_before = parse_openssl_date(&openssl_field(&cert, "-startdate"));
        if let Some(prev) = previous_not_after {
            assert!(
                not_before < prev,
                "generation {g} was issued at {not_before}, after the previous one expired at {prev}"
            );
        }
        previous_not_after = Some(parse_openssl_date(&openssl_field(&cert, "-enddate")));

        // The hook ran for this serial, with exactly the documented variables.
        let env_file = hook_dir.path().join(format!("{serial}.env"));
        let env_text = wait_for(Duration::from_secs(30), "hook output", || {
            std::fs::read_to_string(&env_file).ok()
        });
        let env: BTreeMap<&str, &str> =
            env_text.lines().filter_map(|l| l.split_once('=')).collect();
        assert_eq!(env["EIT_SERIAL"], serial);
        assert_eq!(env["EIT_PREVIOUS_SERIAL"], previous_serial);
        assert_eq!(env["EIT_CERT_FILE"], cert.to_str().unwrap());
        assert_eq!(env["EIT_CERT_DIR"], dir.to_str().unwrap());
        assert!(env["EIT_NOT_AFTER"].ends_with('Z'));
        for name in env.keys() {
            assert!(
                name.starts_with("EIT_")
                    || ["PATH", "RECORD_DIR", "PWD", "SHLVL", "_"].contains(name),
                "unexpected variable {name} in a hook's environment"
            );
        }
        assert!(
            !env_text.to_lowercase().contains("bearer") && !env_text.contains("PRIVATE KEY"),
            "{env_text}"
        );
        previous_serial = serial;
    }
    // One token (5 minutes, with a margin) served every rotation: it is cached across attempts.
    let requests = emulator.requests();
    let count = |path: &str| requests.iter().filter(|r| r["path"] == path).count();
    assert!(count("/identity/v1/certificates") >= 4, "{requests:?}");
    assert_eq!(count("/identity/v1/token"), 1, "{requests:?}");
    let hook_runs = std::fs::read_dir(hook_dir.path()).unwrap().count();
    assert!(
        hook_runs >= 4 && hook_runs <= gens.len(),
        "{hook_runs} hook runs for {} generations",
        gens.len()
    );
}

#[test]
fn sigusr1_renews_now_and_sighup_with_a_broken_config_keeps_the_old_one() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let daemon = DaemonProc::start(&setup);
    let first = wait_for(Duration::from_secs(20), "first install", || {
        current_serial(&setup)
    });

    // The key for the next renewal is made ahead of time, after the install.
    wait_for(Duration::from_secs(120), "the next key", || {
        let log = daemon.log_text();
        (log.contains("the next key is ready") || log.contains("ready on disk")).then_some(())
    });
    daemon.signal(Signal::SIGUSR1);
    let second = wait_for(Duration::from_secs(20), "renewal after SIGUSR1", || {
        current_serial(&setup).filter(|s| *s != first)
    });
    assert!(
        daemon.log_text().contains("using the pre-generated key"),
        "{}",
        daemon.log_text()
    );

    let good = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        format!("{good}\n[certificate]\nkey_bits = 1024\n"),
    )
    .unwrap();
    daemon.signal(Signal::SIGHUP);
    wait_for(
        Duration::from_secs(10),
        "the reload refusal in the log",
        || {
            daemon
                .log_text()
                .contains("keeping the running configuration")
                .then_some(())
        },
    );
    // Still alive and still renewing with the old configuration.
    daemon.signal(Signal::SIGUSR1);
    let third = wait_for(
        Duration::from_secs(20),
        "renewal after the failed reload",
        || current_serial(&setup).filter(|s| *s != second),
    );
    assert_ne!(third, first);
}

#[test]
fn sigterm_during_a_hanging_request_exits_0_without_waiting_for_the_timeout() {
    // A server that accepts connections and never answers: the daemon's first request hangs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace(&emulator.url, &format!("http://127.0.0.1:{port}"))
        .replace("timeout = \"5s\"", "timeout = \"60s\"");
    std::fs::write(&setup.config, text).unwrap();
    let mut daemon = DaemonProc::start(&setup);
    let (mut conn, _) = listener.accept().unwrap();
    // The request is in flight once its first bytes arrive.
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut conn, &mut first).unwrap();
    let sent = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let code = daemon.wait_exit(Duration::from_secs(60));
    let took = sent.elapsed();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log_text());
    // The promise: a stop does not wait out the request's 60 s timeout (half of it, to stay
    // clear of a loaded machine).
    assert!(took < Duration::from_secs(30), "took {took:?} to stop");
    assert!(setup.generations().is_empty());
}

#[test]
fn deleted_or_corrupted_current_is_repaired_at_once() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let _daemon = DaemonProc::start(&setup);
    let first = wait_for(Duration::from_secs(20), "first install", || {
        current_serial(&setup)
    });

    // "At once" is told apart from "at the next renewal", 40 minutes away: the bounds below
    // are generous on purpose.
    std::fs::remove_file(setup.current()).unwrap();
    let second = wait_for(
        Duration::from_secs(60),
        "repair of a deleted current",
        || current_serial(&setup),
    );
    assert_ne!(second, first);

    // Corrupt the certificate inside the current generation.
    let cert = std::fs::canonicalize(setup.current().join("cert.pem")).unwrap();
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    let third = wait_for(
        Duration::from_secs(60),
        "repair of a corrupted cert.pem",
        || current_serial(&setup).filter(|s| *s != second),
    );
    assert_ne!(third, first);
}

#[test]
fn a_hook_that_never_ends_is_killed_at_its_timeout_and_the_daemon_goes_on() {
    let emulator = Emulator::start(&["--max-lifetime", "6s"]);
    let pids = tempfile::NamedTempFile::new().unwrap();
    let hooks = format!(
        "[[hooks]]\nname = \"stuck\"\ncommand = [\"/bin/sh\", \"-c\", 'echo $$ >> \"$PIDS\"; exec sleep 1000']\n\
         timeout = \"1s\"\nenv = {{ PIDS = \"{}\" }}\n",
        pids.path().display()
    );
    let setup = Setup::new(&emulator, 2048, "", &hooks);
    let _daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(30), "two generations", || {
        (generation_count(&setup) >= 2).then_some(())
    });
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(setup.out.join("state.json")).unwrap())
            .unwrap();
    let hook = &state["hooks"][0];
    assert_eq!(hook["name"], "stuck");
    assert_eq!(hook["ok"], false);
    assert!(hook["detail"]
        .as_str()
        .unwrap()
        .contains("killed after its timeout"));
    assert!(state["hook_failures"].as_u64().unwrap() >= 1);
    // The first hook's process is gone (killed with its group), not left behind.
    let first: i32 = std::fs::read_to_string(pids.path())
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{first}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.split(' ').nth(2) == Some("Z"),
        "the timed-out hook {first} is still running: {stat}"
    );
}

#[test]
fn a_second_daemon_on_the_same_directory_is_refused() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let _first = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(20), "first install", || {
        current_serial(&setup)
    });
    let mut second = DaemonProc::start(&setup);
    assert_eq!(second.wait_exit(Duration::from_secs(30)), Some(1));
    let log = second.log_text();
    assert!(
        log.contains("already writing") && log.contains("pid"),
        "{log}"
    );
    // A one-shot renew is refused the same way (`renew --force` asks the daemon instead:
    // operator::renew_force_beside_a_running_daemon_asks_the_daemon).
    let o = setup.run(&["renew"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("already writing"));
}

#[test]
fn metrics_textfile_follows_the_installed_certificate() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let metrics = setup.tmp.path().join("eit.prom");
    setup.add_output_settings(&format!("metrics_file = \"{}\"", metrics.display()));
    let _daemon = DaemonProc::start(&setup);
    let serial = wait_for(Duration::from_secs(20), "first install", || {
        current_serial(&setup)
    });
    let body = wait_for(Duration::from_secs(30), "metrics", || {
        std::fs::read_to_string(&metrics)
            .ok()
            .filter(|t| t.contains("result=\"ok\"} 1"))
    });
    let cert = setup.current().join("cert.pem");
    let not_after = parse_openssl_date(&openssl_field(&cert, "-enddate")).unix_timestamp();
    assert!(
        body.contains(&format!("eit_certd_cert_not_after_seconds {not_after}\n")),
        "{body}"
    );
    assert!(body.contains("eit_certd_hook_failures_total 0"));
    assert!(!serial.is_empty());
}

/// `state.json` and the temporary file it is written through (rewritten after every attempt).
fn is_bookkeeping(p: &std::path::Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "state.json" || n.starts_with(".tmp-state.json"))
}

/// When the emulator saw each of `records` (its journal's RFC 3339 `at`).
fn arrival_times(records: &[serde_json::Value]) -> Vec<time::OffsetDateTime> {
    records
        .iter()
        .map(|r| {
            time::OffsetDateTime::parse(
                r["at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn an_outage_keeps_the_set_spaces_the_retries_and_is_recovered_from() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        "[retry]\ninitial = \"1s\"\nmax = \"4s\"\n",
    );
    let daemon = DaemonProc::start(&setup);
    let first = wait_for(Duration::from_secs(20), "first install", || {
        current_serial(&setup)
    });
    let before: Vec<_> = snapshot(&setup.out)
        .into_iter()
        // The spare (made after the install, at idle priority) is no part of the set.
        .filter(|(p, _)| !is_bookkeeping(p) && !p.starts_with(setup.out.join("spare")))
        .collect();
    let requests_before = emulator.requests().len();

    emulator.set_fault("status-503", None);
    daemon.signal(Signal::SIGUSR1);
    // The outage lasts until the daemon has failed five times in a row (an event, not a
    // fixed time: a slow machine only makes it longer).
    wait_for(Duration::from_secs(120), "five failed attempts", || {
        let log = daemon.log_text();
        (log.matches("renewal failed").count() >= 5).then_some(())
    });
    let during: Vec<_> = emulator.requests()[requests_before..].to_vec();
    emulator.set_fault("ok", None);

    assert!(during.iter().all(|r| r["status"] == 503), "{during:?}");
    // Every retry waits at least max(1 s floor, Retry-After = 2 s), and each attempt ends at
    // its first call (all answer 503): no two calls closer than that. A lower bound on the
    // spacing, which a slow machine cannot break.
    let at = arrival_times(&during);
    assert!(at.len() >= 5, "{during:?}");
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= time::Duration::milliseconds(1900),
            "calls {gap} apart during the outage, under the Retry-After of 2 s: {at:?}"
        );
    }
    let after: Vec<_> = snapshot(&setup.out)
        .into_iter()
        .filter(|(p, _)| !is_bookkeeping(p) && !p.starts_with(setup.out.join("spare")))
        .collect();
    assert_eq!(after, before, "the installed set changed during the outage");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(setup.out.join("state.json")).unwrap())
            .unwrap();
    assert!(state["consecutive_failures"].as_u64().unwrap() >= 1);
    assert!(state["last_attempt"]["error"]
        .as_str()
        .unwrap()
        .contains("HTTP 503"));

    // Retries go on at the 4 s cap: recovery comes long before this certificate's renewal
    // time (40 minutes away), which is what the generous bound tells apart.
    let second = wait_for(Duration::from_secs(60), "recovery after the outage", || {
        current_serial(&setup).filter(|s| *s != first)
    });
    assert_ne!(second, first);
}

#[test]
fn a_certificate_shorter_than_claimed_is_renewed_before_its_real_expiry() {
    // The emulator claims 40 s in the JSON but the certificate lives 10 s.
    let emulator = Emulator::start(&["--max-lifetime", "40s", "--fault", "short-lived"]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let _daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(30), "two generations", || {
        (generation_count(&setup) >= 2).then_some(())
    });
    let gens = setup.generations();
    let cert = |g: &str| setup.out.join("generations").join(g).join("cert.pem");
    let first_not_after = parse_openssl_date(&openssl_field(&cert(&gens[0]), "-enddate"));
    let first_not_before = parse_openssl_date(&openssl_field(&cert(&gens[0]), "-startdate"));
    let second_not_before = parse_openssl_date(&openssl_field(&cert(&gens[1]), "-startdate"));
    assert_eq!(
        first_not_after - first_not_before,
        time::Duration::seconds(10)
    );
    assert!(
        second_not_before < first_not_after,
        "renewed at {second_not_before}, after the real notAfter {first_not_after}"
    );
}

#[test]
fn a_failed_hook_with_retry_is_run_again_without_a_new_certificate() {
    let emulator = Emulator::start(&[]);
    let marker = tempfile::tempdir().unwrap();
    let hooks = format!(
        "[retry]\ninitial = \"1s\"\nmax = \"2s\"\n\n[[hooks]]\nname = \"flaky\"\nretry = true\n\
         command = [\"/bin/sh\", \"-c\", 'if [ -e \"$M\" ]; then echo recovered; else touch \"$M\"; echo first try fails >&2; exit 1; fi']\n\
         env = {{ M = \"{}\" }}\n",
        marker.path().join("ran").display()
    );
    let setup = Setup::new(&emulator, 2048, "", &hooks);
    let _daemon = DaemonProc::start(&setup);
    let state = wait_for(
        Duration::from_secs(20),
        "the hook to succeed on retry",
        || {
            let text = std::fs::read_to_string(setup.out.join("state.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v["hooks"][0]["ok"] == true).then_some(v)
        },
    );
    assert_eq!(state["hooks"][0]["detail"], "recovered");
    assert_eq!(state["hook_failures"], 1);
    assert_eq!(
        state["renewals"]["ok"], 1,
        "a hook retry must not renew again"
    );
    assert_eq!(setup.generations().len(), 1);
    assert_eq!(state["hooks"][0]["serial"], current_serial(&setup).unwrap());
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let socket_path = setup.tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid; exec keeps the shell's pid for us.
    let log = setup.tmp.path().join("systemd-daemon.log");
    let child = std::process::Command::new("/bin/sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(bin())
        .arg("--config")
        .arg(&setup.config)
        .arg("run")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = DaemonProc { child, log };
    let mut heard: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut listen = |heard: &mut Vec<String>, until: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !until(heard) && Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                heard.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
            }
        }
    };
    // READY=1 and the first STATUS= come with the install, the status with the next renewal
    // once its hooks are done; the watchdog may come before or after them.
    listen(&mut heard, &|h| {
        h.iter().any(|m| m == "READY=1")
            && h.iter()
                .any(|m| m.starts_with("STATUS=serial ") && m.contains("next renewal"))
            && h.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2
    });
    assert!(heard.iter().any(|m| m == "READY=1"), "{heard:?}");
    assert!(
        current_serial(&setup).is_some(),
        "READY=1 before a certificate was installed"
    );
    assert!(
        heard
            .iter()
            .any(|m| m.starts_with("STATUS=serial ") && m.contains("next renewal")),
        "{heard:?}"
    );
    assert!(
        heard.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{heard:?}"
    );
    daemon.signal(Signal::SIGTERM);
    listen(&mut heard, &|h| h.iter().any(|m| m == "STOPPING=1"));
    assert!(heard.iter().any(|m| m == "STOPPING=1"), "{heard:?}");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn an_edited_config_file_is_reloaded_without_a_signal() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(20), "first install", || {
        current_serial(&setup)
    });
    let text = std::fs::read_to_string(&setup.config).unwrap();
    // An editor-style replace: write elsewhere, rename over.
    let tmp = setup.config.with_extension("toml.new");
    std::fs::write(&tmp, text.replace("jitter = \"0s\"", "jitter = \"1s\"")).unwrap();
    std::fs::rename(&tmp, &setup.config).unwrap();
    wait_for(Duration::from_secs(30), "the reload", || {
        let log = daemon.log_text();
        (log.contains("the configuration file changed") && log.contains("configuration reloaded"))
            .then_some(())
    });
}

#[test]
fn a_refusal_no_retry_can_fix_is_retried_only_at_the_cap() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        "[retry]\ninitial = \"1s\"\nmax = \"3s\"\n",
    );
    let daemon = DaemonProc::start(&setup);
    let first = wait_for(Duration::from_secs(20), "first install", || {
        current_serial(&setup)
    });
    emulator.set_fault("refuse-csr", None);
    let before = emulator.requests().len();
    daemon.signal(Signal::SIGUSR1);
    let certificate_calls = wait_for(Duration::from_secs(60), "three refusals", || {
        let calls: Vec<_> = emulator.requests()[before..]
            .iter()
            .filter(|r| r["path"] == "/identity/v1/certificates")
            .cloned()
            .collect();
        (calls.len() >= 3).then_some(calls)
    });
    // At the 3 s cap from the first refusal on, where transient backoff would wait 1 s, then
    // up to 2 s: a lower bound on the spacing, which a slow machine cannot break.
    let at = arrival_times(&certificate_calls);
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= time::Duration::milliseconds(2900),
            "refusals {gap} apart, not at the 3 s cap: {at:?}"
        );
    }
    assert!(certificate_calls.iter().all(|r| r["status"] == 400));
    let log = daemon.log_text();
    assert!(
        log.contains("will keep failing until the configuration is fixed")
            && log.contains("invalid_csr"),
        "{log}"
    );
    assert_eq!(
        current_serial(&setup),
        Some(first),
        "the installed set must stay"
    );
}

#[test]
fn a_stop_while_the_next_key_is_being_generated_exits_cleanly() {
    // After each install the daemon starts generating the next RSA-4096 key on a thread of
    // its own; a stop then must neither wait for it nor crash the exit (OpenSSL's exit-time
    // cleanup once freed its state under that thread: a segfault or a hang, now and then).
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 4096, "", "");
    for round in 0..3 {
        let mut daemon = DaemonProc::start(&setup);
        let before = setup.generations().len();
        if round > 0 {
            // Signal only once it listens: SIGUSR1's default action would end it.
            wait_for(Duration::from_secs(10), "the daemon to start", || {
                daemon
                    .log_text()
                    .contains("installed certificate is valid")
                    .then_some(())
            });
            daemon.signal(Signal::SIGUSR1);
        }
        wait_for(Duration::from_secs(60), "an install", || {
            (setup.generations().len() > before).then_some(())
        });
        wait_for(
            Duration::from_secs(10),
            "the next key to be under way",
            || {
                daemon
                    .log_text()
                    .contains("next renewal scheduled")
                    .then_some(())
            },
        );
        daemon.signal(Signal::SIGTERM);
        let code = daemon.wait_exit(Duration::from_secs(60));
        assert_eq!(code, Some(0), "round {round}: {}", daemon.log_text());
    }
}

#[test]
fn generations_past_keep_are_pruned_when_the_daemon_starts() {
    // A renewal prunes after its hooks, so one stopped during them leaves an extra generation;
    // here, lowering output.keep leaves two.
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    for _ in 0..3 {
        assert_exit(&setup.run(&["renew", "--force"]), 0);
    }
    assert_eq!(setup.generations().len(), 3);
    let serial = current_serial(&setup).unwrap();
    setup.add_output_settings("keep = 1");
    let mut daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(30), "the daemon to start", || {
        daemon
            .log_text()
            .contains("installed certificate is valid")
            .then_some(())
    });
    assert_eq!(setup.generations().len(), 1, "{:?}", setup.generations());
    assert_eq!(current_serial(&setup), Some(serial));
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
}

/// READY=1 follows the first install at once, not its hooks: the unit is ordered before
/// stunnel4 and tlshd, and a hook that restarts one of them (`systemctl restart tlshd`) waits
/// for eit-certd's start job. Here the hook stands for that: it waits until systemd (this
/// test) has heard READY=1, which only happens if READY comes before the hooks.
#[test]
fn ready_is_sent_when_the_set_is_installed_not_after_its_hooks() {
    let emulator = Emulator::start(&[]);
    let released = tempfile::tempdir().unwrap();
    let release = released.path().join("ready-heard");
    let hook = format!(
        "[[hooks]]\nname = \"waits-for-our-start-job\"\ncommand = [\"/bin/sh\", \"-c\", \
         \"i=0; while [ ! -e {} ]; do i=$((i+1)); [ $i -lt 450 ] || exit 7; sleep 0.1; done\"]\n\
         timeout = \"60s\"\n",
        release.display()
    );
    let setup = Setup::new(&emulator, 2048, "", &hook);
    let (mut daemon, socket) = DaemonProc::start_notified(&setup);
    let mut buf = [0u8; 4096];
    // Shorter than the hook's own 45 s: READY after the hooks is never heard in time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut heard = Vec::new();
    let installed = |heard: &[String]| {
        heard.iter().any(|m| m == "READY=1")
            && heard
                .iter()
                .any(|m| m.starts_with("STATUS=serial ") && m.contains("running its hooks"))
    };
    while !installed(&heard) && Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
        }
    }
    std::fs::write(&release, "").unwrap();
    assert!(
        heard.iter().any(|m| m == "READY=1"),
        "no READY=1 while the first install's hook ran: {heard:?}\n{}",
        daemon.log_text()
    );
    assert!(
        current_serial(&setup).is_some(),
        "READY=1 before the install"
    );
    assert!(
        heard
            .iter()
            .any(|m| m.starts_with("STATUS=serial ") && m.contains("running its hooks")),
        "{heard:?}"
    );
    // And the hook, released, succeeds: no timeout, nothing owed.
    wait_for(Duration::from_secs(30), "the hook to succeed", || {
        daemon.log_text().contains("hook succeeded").then_some(())
    });
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
}

/// Someone debugging runs the daemon at `RUST_LOG=trace` with stderr in a file next to the
/// config (a watched directory). Each log line was an inotify event that logged lines: about
/// two million lines in 5 s at 95 % CPU, SIGUSR1 unserved for 15 s, SIGTERM ignored. Now
/// our own log is not an event, the watch's crates do not log per event, and signals are
/// served.
#[test]
fn a_trace_log_next_to_the_config_does_not_feed_the_watch() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let log = setup.config.with_file_name("daemon-trace.log");
    let child = std::process::Command::new(bin())
        .arg("--config")
        .arg(&setup.config)
        .arg("run")
        .env("RUST_LOG", "trace")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = DaemonProc {
        child,
        log: log.clone(),
    };
    let installs = || {
        daemon
            .log_text()
            .matches("installed a new certificate")
            .count()
    };
    wait_for(Duration::from_secs(60), "the first install", || {
        (installs() >= 1).then_some(())
    });
    // After the first attempt is closed: a SIGUSR1 during it is answered by it.
    wait_for(
        Duration::from_secs(60),
        "the first attempt to close",
        || {
            daemon
                .log_text()
                .contains("next renewal scheduled")
                .then_some(())
        },
    );
    let size_after_install = std::fs::metadata(&log).unwrap().len();
    daemon.signal(Signal::SIGUSR1);
    wait_for(Duration::from_secs(60), "SIGUSR1 to be served", || {
        (installs() >= 2).then_some(())
    });
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        Some(0),
        "SIGTERM unserved"
    );
    // A quiet daemon: the log holds what two renewals say (tens of lines at trace level),
    // not a line per event per line (tens of thousands a second).
    let text = daemon.log_text();
    let lines = text.lines().count();
    assert!(
        !text.contains("inotify event"),
        "the watch logs its events: {lines} lines"
    );
    assert!(lines < 5_000, "{lines} log lines for two renewals");
    assert!(std::fs::metadata(&log).unwrap().len() >= size_after_install);
}
