//! The fleet operator's view: `status` tells whether anything will renew and why not, exit
//! codes follow what is wrong, and the commands behave as people who run many instances
//! expect (`renew --dry-run`, `renew --force` beside a daemon, `init --output -`).

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::*;

fn status_json(setup: &Setup) -> (Option<i32>, serde_json::Value) {
    let o = setup.run(&["status", "--json"]);
    (o.status.code(), serde_json::from_str(&stdout(&o)).unwrap())
}

/// A valid set with no daemon: nothing will renew it. `status` said "next renewal in 39m" and
/// exited 0 without a word; now it says no daemon holds the lock (`daemon.state` in JSON), and
/// the monitoring-plugin exit code is WARNING until a daemon does.
#[test]
fn status_says_whether_a_daemon_will_renew() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let (code, report) = status_json(&setup);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["health"], "valid");
    assert_eq!(report["daemon"]["state"], "free");
    let text = stdout(&setup.run(&["status"]));
    assert!(text.contains("daemon        NOT running"), "{text}");
    assert_exit(&setup.run(&["status", "--monitoring-plugin"]), 1);

    let mut daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(30), "the daemon", || {
        daemon
            .log_text()
            .contains("installed certificate is valid")
            .then_some(())
    });
    let (code, report) = status_json(&setup);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["daemon"]["state"], "held");
    assert_eq!(report["daemon"]["pid"], daemon.pid());
    assert_exit(&setup.run(&["status", "--monitoring-plugin"]), 0);
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
    // .lock keeps the dead pid; the kernel knows nobody holds it.
    let (_, report) = status_json(&setup);
    assert_eq!(report["daemon"]["state"], "free");
}

/// A failing hook: `renew --force` exited 0 and `status` said valid while listing the hook as
/// FAILED. Now the renewal exits 1 (installed, but a consumer may not use it), and status is
/// degraded naming the hook.
#[test]
fn a_failing_hook_changes_the_exit_codes() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        "[[hooks]]\nname = \"reload-consumer\"\ncommand = [\"/bin/sh\", \"-c\", \"echo no consumer >&2; exit 4\"]\n",
    );
    let o = setup.run(&["renew", "--force"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("hook reload-consumer failed"),
        "{}",
        stderr(&o)
    );
    assert!(
        current_serial(&setup).is_some(),
        "the set is installed all the same"
    );
    let (code, report) = status_json(&setup);
    assert_eq!(code, Some(1));
    assert_eq!(report["health"], "degraded");
    let reasons = report["degraded"].to_string();
    assert!(
        reasons.contains("hook reload-consumer failed for the installed set"),
        "{reasons}"
    );
}

/// A typo saved into the config: `status` exited 2 with the parse error only. Now it still
/// shows the installed set (from the default output directory when the file does not say),
/// says the config does not load, and exits 2 (CRITICAL for a monitoring plugin).
#[test]
fn a_config_that_does_not_load_still_shows_the_installed_set() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    // Keeps output.dir readable for the fallback: the typo is elsewhere in the file.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, text.replace("jitter = ", "jiter = ")).unwrap();
    let serial = current_serial(&setup).unwrap();
    let o = setup.run(&["status"]);
    assert_exit(&o, 2);
    assert!(
        stdout(&o).contains("the config file does not load") && stdout(&o).contains("jiter"),
        "{}",
        stdout(&o)
    );
    // The installed set, from the output.dir the broken file still names.
    assert!(
        stdout(&o).contains(&format!("serial        {serial}")),
        "{}",
        stdout(&o)
    );
    let o = setup.run(&["status", "--monitoring-plugin"]);
    assert_exit(&o, 2);
}

/// certbot's `renew --dry-run`: the pipeline without the install.
#[test]
fn renew_dry_run_installs_nothing() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&["renew", "--dry-run"]);
    assert_exit(&o, 0);
    assert!(!setup.current().exists(), "nothing installed");
    assert_eq!(emulator.certificate_requests_since(0), 1);
}

/// The README's takeover steps say `renew --force`; with the daemon running it was refused.
/// Now the daemon is asked (SIGUSR1) and the command waits for its result.
#[test]
fn renew_force_beside_a_running_daemon_asks_the_daemon() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let daemon = DaemonProc::start(&setup);
    let first = wait_for(Duration::from_secs(30), "the first install", || {
        current_serial(&setup)
    });
    // After the first attempt is recorded (it is the one this renewal must not mistake).
    wait_for(
        Duration::from_secs(30),
        "the first attempt recorded",
        || {
            daemon
                .log_text()
                .contains("next renewal scheduled")
                .then_some(())
        },
    );
    let o = setup.run(&["renew", "--force"]);
    assert_exit(&o, 0);
    let second = current_serial(&setup).unwrap();
    assert_ne!(first, second);
    assert!(
        stdout(&o).contains(&format!("installed serial {second}")),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("asked it to renew now"),
        "{}",
        stderr(&o)
    );
    assert!(
        daemon.log_text().contains("SIGUSR1"),
        "{}",
        daemon.log_text()
    );
}

/// `init --output -` wrote a file named `-`.
#[test]
fn init_to_standard_output() {
    let tmp = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(bin())
        .args(["init", "--output", "-"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("[output]"), "{}", stdout(&o));
    assert!(!tmp.path().join("-").exists());
}

/// As another user, `renew` advised `chown 1001 <output dir>`: handing the key directory to
/// that user. It says to run as root.
#[test]
fn the_advice_without_root_is_to_run_as_root() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    for p in [setup.tmp.path(), setup.config.as_path()] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        &setup.config,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
            .args(args)
            .output()
            .unwrap()
    };
    // The build directory may be one that only root can enter (a checkout under /root).
    if !as_nobody(&["--version"]).status.success() {
        skipped!(
            "user 65534 cannot run {} (a directory on its way is closed)",
            bin()
        );
        return;
    }
    let o = as_nobody(&[
        "--config",
        setup.config.to_str().unwrap(),
        "renew",
        "--force",
    ]);
    assert_ne!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(err.contains("run eit-certd as root"), "{err}");
    assert!(!err.contains("chown 65534"), "{err}");
}

/// `run` started with a hook that `check` rejects (and failed it at every install, looking
/// healthy meanwhile); `check` passed a metrics file in a directory that does not exist. Both
/// are refused now, naming the key.
#[test]
fn run_refuses_what_check_refuses() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        "[[hooks]]\nname = \"reload\"\ncommand = [\"/nonexistent/reload\"]\n",
    );
    let mut daemon = DaemonProc::start(&setup);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(2));
    assert!(
        daemon
            .log_text()
            .contains("hooks.reload.command: /nonexistent/reload"),
        "{}",
        daemon.log_text()
    );
    assert!(!setup.current().exists(), "nothing requested or installed");
    assert_eq!(emulator.certificate_requests_since(0), 0);

    let setup = Setup::new(&emulator, 2048, "", "");
    setup.add_output_settings("metrics_file = \"/nonexistent-dir/eit-certd.prom\"");
    let o = setup.run(&["check"]);
    assert_exit(&o, 2);
    assert!(
        stdout(&o).contains("problem: output.metrics_file: /nonexistent-dir does not exist"),
        "{}",
        stdout(&o)
    );
}

/// JSON logs carried Debug strings (`"exit_code":"Some(1)"`, `"timings":"Timings {…}"`,
/// `"retry_in":"5s 920ms 305us 281ns"`) and one-shot commands mixed plain-text warnings and
/// errors into the JSON stream. Every line is JSON now, with numbers where numbers belong.
#[test]
fn json_logs_are_json_with_typed_fields() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        "[retry]\ninitial = \"1s\"\nmax = \"2s\"\n\n[[hooks]]\nname = \"fails\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
    );
    let lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let o = setup.run_with_env(
        &["--log-format", "json", "-v", "renew", "--force"],
        &[("RUST_LOG", "eit_certd=debug")],
    );
    assert_exit(&o, 1);
    let log = lines(&stderr(&o));
    let hook = log
        .iter()
        .find(|l| l["fields"]["message"] == "hook failed")
        .expect("hook failed line");
    assert_eq!(hook["fields"]["exit_code"], 3, "{hook}");
    let stages = log
        .iter()
        .find(|l| l["fields"]["message"] == "renewal stages")
        .expect("renewal stages line");
    assert!(stages["fields"]["request_ms"].is_number(), "{stages}");

    // A failure: its retry delay is a number of milliseconds; the command's own error is JSON.
    emulator.set_fault("status-503", None);
    let o = setup.run(&["--log-format", "json", "renew", "--force"]);
    assert_exit(&o, 1);
    let log = lines(&stderr(&o));
    assert!(log.iter().any(|l| l["level"] == "ERROR"), "{log:?}");
    let log_file = setup.tmp.path().join("json-daemon.log");
    let child = std::process::Command::new(bin())
        .args([
            "--config",
            setup.config.to_str().unwrap(),
            "--log-format",
            "json",
            "run",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();
    let daemon = DaemonProc {
        child,
        log: log_file,
    };
    // The installed set is valid: a renewal is asked for.
    wait_for(Duration::from_secs(60), "the daemon to start", || {
        daemon
            .log_text()
            .contains("installed certificate is valid")
            .then_some(())
    });
    daemon.signal(Signal::SIGUSR1);
    let line = wait_for(Duration::from_secs(60), "a failed attempt", || {
        daemon
            .log_text()
            .lines()
            .find(|l| l.contains("renewal failed"))
            .map(str::to_string)
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["fields"]["retry_in_ms"].is_u64(), "{v}");
}

/// systemd's status line says what `status` says: a set whose hook failed (and is owed) is
/// degraded, and says so in `systemctl status`.
#[test]
fn the_systemd_status_line_says_degraded_while_a_hook_is_owed() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        "[[hooks]]\nname = \"fails\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\nretry = true\n",
    );
    let (_daemon, socket) = DaemonProc::start_notified(&setup);
    let mut buf = [0u8; 4096];
    let status = wait_for(Duration::from_secs(60), "a degraded status line", || {
        let n = socket.recv(&mut buf).ok()?;
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        m.contains("DEGRADED").then_some(m)
    });
    assert!(status.contains("still owed: fails"), "{status}");
}

/// A typo saved into the config is found at the next start, typically a reboot. With
/// `RestartPreventExitStatus=2` systemd stopped trying: nothing renewed, nothing alerted. The
/// shipped unit keeps restarting (every RestartSec, with no start limit), logging the error.
#[test]
fn the_unit_keeps_retrying_a_configuration_error() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/eit-certd.service"
    ))
    .unwrap();
    let settings: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(
        !settings
            .iter()
            .any(|l| l.starts_with("RestartPreventExitStatus")),
        "{unit}"
    );
    assert!(settings.contains(&"Restart=on-failure"), "{unit}");
    // In [Unit], where systemd reads it (in [Service] it is ignored with a warning).
    let unit_section = unit.split("[Service]").next().unwrap();
    assert!(
        unit_section
            .lines()
            .any(|l| l.trim() == "StartLimitIntervalSec=0"),
        "{unit}"
    );
    // And a config error is exit 2, which Restart=on-failure restarts.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[certificate]\njiter = \"1s\"\n").unwrap();
    let o = std::process::Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "run"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
}
