//! The scripting and first-run commands against the real emulator.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

#[test]
fn token_goes_to_stdout_only_even_with_trace_logging() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run_with_env(&["token", "--lifetime", "30s"], &[("RUST_LOG", "trace")]);
    assert_exit(&o, 0);
    let token = stdout(&o).trim().to_string();
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(token.len() > 20, "{token}");
    assert!(
        !stderr(&o).contains(&token),
        "the token leaked into the log"
    );
    assert!(!stderr(&o).contains(&token[token.len() - 16..]));
    let token_calls: Vec<_> = emulator
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/identity/v1/token")
        .collect();
    assert_eq!(token_calls.len(), 1);
    assert_eq!(token_calls[0]["status"], 200);
}

#[test]
fn iam_token_needs_a_profile_and_returns_a_token() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&[
        "iam-token",
        "--profile-id",
        "Profile-8dd84246-7df4-4667-94e4-8cede51d5ac5",
    ]);
    assert_exit(&o, 0);
    let iam = stdout(&o).trim().to_string();
    assert!(!iam.is_empty() && !stderr(&o).contains(&iam));
    let o = setup.run(&[
        "iam-token",
        "--profile-crn",
        "crn:v1:bluemix:public:iam-identity::a/x::profile:Profile-1",
    ]);
    assert_exit(&o, 0);
    // clap refuses a call without a profile (usage error, exit 2).
    assert_exit(&setup.run(&["iam-token"]), 2);
    assert!(emulator
        .requests()
        .iter()
        .filter(|r| r["path"] == "/identity/v1/iam_token")
        .all(|r| r["status"] == 200));
}

#[test]
fn instance_shows_id_name_and_zone() {
    let emulator = Emulator::start(&["--instance-id", "0717_11111111-2222-3333-4444-555555555555"]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&["instance"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains("id    11111111-2222-3333-4444-555555555555"),
        "{text}"
    );
    assert!(text.contains("zone  us-south-1"), "{text}");
    let o = setup.run(&["instance", "--json"]);
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["zone"]["name"], "us-south-1");
    assert!(v["name"].is_string());
}

#[test]
fn init_writes_the_defaults_once_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    let o = Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "init"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("[certificate]") && written.contains("# "));
    std::fs::write(&path, "# mine\n").unwrap();
    let o = Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "init"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("left as it is"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
}

#[test]
fn check_lists_each_problem_and_online_does_a_round_trip_without_installing() {
    let emulator = Emulator::start(&[]);
    let bad = Setup::new(
        &emulator,
        2048,
        "",
        "[[hooks]]\nname = \"reload\"\ncommand = [\"/nonexistent/reload\"]\n",
    );
    let o = bad.run(&["check"]);
    assert_exit(&o, 2);
    assert!(
        stdout(&o).contains("problem: hooks.reload.command: /nonexistent/reload"),
        "{}",
        stdout(&o)
    );

    let good = Setup::new(&emulator, 2048, "", "");
    let o = good.run(&["check", "--online"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("configuration OK"));
    assert!(
        stdout(&o).contains("nothing was installed"),
        "{}",
        stdout(&o)
    );
    assert!(good.generations().is_empty());
    assert!(!good.current().exists());
    assert!(emulator
        .requests()
        .iter()
        .any(|r| r["path"] == "/identity/v1/certificates" && r["status"] == 201));
    // The same validation as a renewal (it is the renewal's own pipeline, without the install).
    emulator.set_fault("expired", Some(1));
    let o = good.run(&["check", "--online"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("refused the certificate the service returned"),
        "{}",
        stderr(&o)
    );
    assert!(!good.current().exists());
}

#[test]
fn stunnel_config_points_at_the_current_files() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&[
        "stunnel-config",
        "--connect",
        "10.240.64.5:20049",
        "--check-host",
        "share.example",
    ]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    let current = setup.current();
    assert!(text.contains("client = yes"));
    assert!(text.contains("connect = 10.240.64.5:20049"));
    assert!(text.contains(&format!(
        "cert = {}",
        current.join("fullchain.pem").display()
    )));
    assert!(text.contains(&format!("key = {}", current.join("key.pem").display())));
    assert!(text.contains("verifyChain = yes") && text.contains("checkHost = share.example"));
}

#[test]
fn completions_and_man_page_cover_the_commands() {
    let o = Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("renew") && stdout(&o).contains("stunnel-config"));
    let o = Command::new(bin()).arg("man").output().unwrap();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains(".TH eit-certd 1"));
    assert!(stdout(&o).contains("renew"));
}

#[test]
fn json_log_format_emits_json_lines() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&["--log-format", "json", "renew"]);
    assert_exit(&o, 0);
    let lines: Vec<&str> = std::str::from_utf8(&o.stderr).unwrap().lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}

/// `check` reads the installed unit and its drop-ins as systemd finds them (`SYSTEMD_UNIT_PATH`
/// here) and refuses a configured path the sandboxed daemon could not write: the metrics file
/// and the swanctl links outside `ReadWritePaths=` used to pass `check` and then fail (or, for
/// the metrics, vanish) under systemd.
#[test]
fn check_refuses_paths_the_shipped_unit_may_not_write() {
    let emulator = Emulator::start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let swanctl_parent = tempfile::tempdir().unwrap();
    let swanctl = swanctl_parent.path().join("swanctl");
    std::fs::create_dir_all(&swanctl).unwrap();
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        &format!("[output.swanctl]\ndir = \"{}\"\n", swanctl.display()),
    );
    let metrics_dir = swanctl_parent.path().join("metrics");
    std::fs::create_dir(&metrics_dir).unwrap();
    setup.add_output_settings(&format!(
        "metrics_file = \"{}/eit-certd.prom\"\n",
        metrics_dir.display()
    ));
    let units = scratch.path().join("units");
    let dropins = units.join("eit-certd.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    let unit_path = units.to_str().unwrap();
    let check = || setup.run_with_env(&["check"], &[("SYSTEMD_UNIT_PATH", unit_path)]);

    // No unit installed: nothing is known, nothing is claimed.
    assert_exit(&check(), 0);

    // The shipped unit, but with this test's output.dir as its state directory, and without
    // PrivateTmp (which makes every path under /tmp, where these tests live, writable).
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/eit-certd.service"
    ))
    .unwrap();
    assert!(
        shipped.contains("PrivateTmp=yes\n")
            && shipped.contains("ReadWritePaths=/var/lib/eit-certd\n")
    );
    let unit = shipped
        .replace("PrivateTmp=yes\n", "PrivateTmp=no\n")
        .replace(
            "ReadWritePaths=/var/lib/eit-certd\n",
            &format!("ReadWritePaths={}\n", setup.out.display()),
        );
    std::fs::write(units.join("eit-certd.service"), unit).unwrap();
    let o = check();
    assert_exit(&o, 2);
    let text = stdout(&o);
    for key in ["key", "cert", "chain"] {
        assert!(
            text.contains(&format!("problem: output.swanctl.{key}: "))
                && text.contains("read-only for the daemon under its systemd unit"),
            "{text}"
        );
    }
    assert!(text.contains("eit-certd-swanctl.conf"), "{text}");
    assert!(
        text.contains(&format!(
            "problem: output.metrics_file: {} is read-only",
            metrics_dir.display()
        )),
        "{text}"
    );
    assert!(!text.contains("problem: output.dir"), "{text}");

    // The documented drop-ins (swanctl's, with this test's directory) make both writable.
    std::fs::write(
        dropins.join("swanctl.conf"),
        format!(
            "[Service]\nReadWritePaths=-{0}/private -{0}/x509 -{0}/x509ca\n",
            swanctl.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dropins.join("metrics.conf"),
        format!("[Service]\nReadWritePaths={}\n", metrics_dir.display()),
    )
    .unwrap();
    assert_exit(&check(), 0);
}

/// `status` and `check` look at the consumers the hooks reload: a stunnel that runs as another
/// user and cannot read the key (no `output.group`) is named with the fix; with the group set
/// it can. A stand-in process named like stunnel plays the consumer (the real one is in the
/// systemd test and the hook tests); other tests' stunnels may run at the same time, so only
/// this one's pid is looked at.
#[test]
fn status_and_check_say_whether_a_consumer_can_read_the_set() {
    let emulator = Emulator::start(&[]);
    let hook = format!(
        "[[hooks]]\nname = \"reload-stunnel\"\ncommand = [\"{}/hooks/stunnel-reload\"]\n\
         env = {{ STUNNEL_OPTIONAL = \"1\", STUNNEL_PID_GLOB = \"/nonexistent/*.pid\" }}\n",
        env!("CARGO_MANIFEST_DIR")
    );
    let setup = Setup::new(&emulator, 2048, "", &hook);
    std::fs::set_permissions(
        setup.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert_exit(&setup.run(&["renew"]), 0);
    let stand_in = setup.tmp.path().join("stunnel4");
    std::fs::copy("/bin/sleep", &stand_in).unwrap();
    let mut stunnel = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&stand_in)
        .arg("120")
        .spawn()
        .unwrap();
    let pid = stunnel.id();
    let ours = |report: &serde_json::Value| -> serde_json::Value {
        report["consumers"][0]["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .cloned()
            .unwrap_or_else(|| panic!("pid {pid} not in {report}"))
    };
    // /proc/PID/comm is the stand-in's name once it has exec'd.
    wait_for(Duration::from_secs(30), "the stand-in to run", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .filter(|c| c.trim() == "stunnel4")
    });
    let group = "nogroup";
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&setup.run(&["status", "--json"]))).unwrap();
    assert_eq!(report["consumers"][0]["kind"], "stunnel");
    assert_eq!(report["consumers"][0]["hook"], "reload-stunnel");
    let p = ours(&report);
    assert_eq!(p["uid"], 65534);
    assert_eq!(p["can_read"], false, "{p}");
    assert!(p["problem"].as_str().unwrap().contains("key.pem"), "{p}");
    assert!(
        p["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("group = \"{group}\"")),
        "{p}"
    );
    let text = stdout(&setup.run(&["status"]));
    assert!(
        text.contains(&format!("pid {pid} uid 65534 CANNOT read the set")),
        "{text}"
    );
    let o = setup.run(&["check"]);
    assert_exit(&o, 2);
    assert!(
        stdout(&o).contains(&format!(
            "problem: hooks.reload-stunnel: stunnel pid {pid}: "
        )),
        "{}",
        stdout(&o)
    );

    // The documented fix.
    setup.add_output_settings(&format!("group = \"{group}\"\n"));
    assert_exit(&setup.run(&["renew", "--force"]), 0);
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&setup.run(&["status", "--json"]))).unwrap();
    assert_eq!(ours(&report)["can_read"], true, "{report}");
    assert!(!stdout(&setup.run(&["check"])).contains(&format!("pid {pid}:")));
    let _ = stunnel.kill();
    let _ = stunnel.wait();
}
