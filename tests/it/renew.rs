//! One-shot renewal against the real emulator, through the real binary.

use crate::common::*;

fn verify_with_openssl(setup: &Setup, emulator: &Emulator) {
    let cur = setup.current();
    let (ok, out) = openssl_verify(&emulator.ca_pem(), &cur, None);
    assert!(ok && out.contains(": OK"), "openssl verify: {out}");
    assert_eq!(
        pubkey_of_cert(&cur.join("cert.pem")),
        pubkey_of_key(&cur.join("key.pem")),
        "key.pem is not the key of cert.pem"
    );
    assert_eq!(mode(&cur.join("key.pem")), 0o600);
    assert_eq!(mode(&cur.join("combined.pem")), 0o600);
    assert_eq!(mode(&cur.join("cert.pem")), 0o644);
    let full = std::fs::read_to_string(cur.join("fullchain.pem")).unwrap();
    let cert = std::fs::read_to_string(cur.join("cert.pem")).unwrap();
    let chain = std::fs::read_to_string(cur.join("chain.pem")).unwrap();
    assert_eq!(full, format!("{cert}{chain}"));
}

#[test]
fn renew_over_http_installs_a_set_openssl_accepts() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&["renew"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("installed serial"), "{}", stdout(&o));
    verify_with_openssl(&setup, &emulator);

    // The service saw a CSR with our subject, no CN and no extensions.
    let requests = emulator.requests();
    let csr_calls: Vec<_> = requests.iter().filter(|r| !r["csr"].is_null()).collect();
    assert_eq!(csr_calls.len(), 1, "{requests:?}");
    let csr = &csr_calls[0]["csr"];
    let names: Vec<String> = csr["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["C", "O"], "{csr}");
    assert_eq!(csr["extension_count"], 0);
    assert_eq!(csr["key_bits"], 2048);
    assert_eq!(csr_calls[0]["status"], 201);
    assert!(requests
        .iter()
        .any(|r| r["path"].as_str().unwrap().ends_with("/identity/v1/token")));

    // status agrees, exit 0 = valid
    let s = setup.run(&["status", "--json"]);
    assert_exit(&s, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&s)).unwrap();
    assert_eq!(report["health"], "valid");
    assert_eq!(report["state"]["last_attempt"]["outcome"], "ok");
    let (_, serial) = run_tool(
        "openssl",
        &[
            "x509",
            "-in",
            setup.current().join("cert.pem").to_str().unwrap(),
            "-noout",
            "-serial",
        ],
    );
    assert_eq!(
        serial.trim(),
        format!("serial={}", report["installed"]["serial"].as_str().unwrap())
    );
}

#[test]
fn renew_over_https_with_ca_file_and_a_4096_bit_key() {
    let emulator = Emulator::start(&["--tls"]);
    assert!(emulator.url.starts_with("https://"));
    let ca = format!("ca_file = \"{}\"", emulator.ca_pem().display());
    let setup = Setup::new(&emulator, 4096, &ca, "");
    let o = setup.run(&["renew"]);
    assert_exit(&o, 0);
    verify_with_openssl(&setup, &emulator);
    let (_, text) = run_tool(
        "openssl",
        &[
            "pkey",
            "-in",
            setup.current().join("key.pem").to_str().unwrap(),
            "-noout",
            "-text",
        ],
    );
    assert!(text.contains("4096 bit"), "{text}");
}

#[test]
fn https_without_the_ca_file_is_refused_and_writes_nothing() {
    let emulator = Emulator::start(&["--tls"]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&["renew"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("could not verify the server") && err.contains("metadata.ca_file"),
        "{err}"
    );
    assert!(setup.generations().is_empty());
    assert!(!setup.current().exists());
}

#[test]
fn renew_without_force_is_a_noop_and_force_keeps_the_old_generation() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let first = setup.generations();
    assert_eq!(first.len(), 1);
    let before = snapshot(&setup.out.join("generations"));

    let o = setup.run(&["renew"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("nothing to do"), "{}", stdout(&o));
    assert_eq!(setup.generations(), first);
    let cert_calls = emulator
        .requests()
        .iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/certificates"))
        .count();
    assert_eq!(cert_calls, 1, "a no-op renew must not call the service");

    let o = setup.run(&["renew", "--force"]);
    assert_exit(&o, 0);
    let after = setup.generations();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], first[0]);
    // The old generation is byte-identical; current moved to the new one.
    let old_dir = setup.out.join("generations").join(&first[0]);
    let now = snapshot(&setup.out.join("generations"));
    for (path, content) in &before {
        if path.starts_with(&old_dir) {
            assert_eq!(now.get(path), Some(content), "{} changed", path.display());
        }
    }
    let target = std::fs::read_link(setup.current()).unwrap();
    assert_eq!(target, std::path::Path::new("generations").join(&after[1]));
}

#[test]
fn instance_identity_family_works_too() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(
        &emulator,
        2048,
        "api = \"instance_identity\"\nversion = \"2024-11-12\"",
        "",
    );
    assert_exit(&setup.run(&["renew"]), 0);
    assert!(emulator
        .requests()
        .iter()
        .any(|r| r["path"] == "/instance_identity/v1/certificates" && r["status"] == 201));
}

#[test]
fn status_without_a_certificate_exits_3() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&["status"]);
    assert_exit(&o, 3);
    assert!(
        stdout(&o).contains("no certificate installed"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn output_group_makes_the_key_readable_by_that_group_only() {
    use std::os::unix::fs::MetadataExt;
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    setup.add_output_settings("group = \"daemon\"");
    assert_exit(&setup.run(&["renew"]), 0);
    let gid = nix::unistd::Group::from_name("daemon")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    for name in ["key.pem", "combined.pem"] {
        let meta = std::fs::metadata(setup.current().join(name)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640, "{name}");
        assert_eq!(meta.gid(), gid, "{name}");
    }
    assert_eq!(mode(&setup.current().join("cert.pem")), 0o644);
}

#[test]
fn https_to_a_name_the_server_certificate_does_not_cover_is_refused() {
    // The emulator's certificate covers localhost, 127.0.0.1 and api.metadata.cloud.ibm.com;
    // 127.0.0.2 is loopback too, but not a name in it.
    let emulator = Emulator::start(&["--tls", "--listen", "127.0.0.2:0"]);
    assert!(
        emulator.url.starts_with("https://127.0.0.2:"),
        "{}",
        emulator.url
    );
    let ca = format!("ca_file = \"{}\"", emulator.ca_pem().display());
    let setup = Setup::new(&emulator, 2048, &ca, "");
    let o = setup.run(&["renew"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("could not verify the server")
            && err.contains("not valid for name \"127.0.0.2\"")
            && err.contains("does not cover the host"),
        "{err}"
    );
    assert!(setup.generations().is_empty());
}

/// Under the unit's `UMask=0077` the directories eit-certd creates must still let a consumer
/// that runs as another user (stunnel after it drops to `stunnel4`) reach the set, and a
/// `generations/` that an earlier version left 0700 is repaired.
#[test]
fn a_consumer_running_as_another_user_can_read_the_set_whatever_the_umask() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    // As /var/lib is: the way to output.dir is open (tempdir makes it 0700).
    std::fs::set_permissions(
        setup.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let renew_under_umask = |args: &[&str]| {
        let config = setup.config.to_str().unwrap();
        let mut command = std::process::Command::new("sh");
        command
            .args([
                "-c",
                "umask 077; exec \"$@\"",
                "sh",
                bin(),
                "--config",
                config,
            ])
            .args(args);
        command.output().unwrap()
    };
    assert_exit(&renew_under_umask(&["renew"]), 0);
    assert_eq!(mode(&setup.out.join("generations")), 0o755);
    // A process of an unprivileged user, asked about as the hooks ask.
    let mut nobody = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    let can_read = |path: &std::path::Path| {
        std::process::Command::new(bin())
            .args(["can-read", "--pid", &nobody.id().to_string()])
            .arg(path)
            .output()
            .unwrap()
    };
    let fullchain = setup.out.join("current/fullchain.pem");
    assert_exit(&can_read(&fullchain), 0);
    // The key stays the owner's.
    let o = can_read(&setup.out.join("current/key.pem"));
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("no read permission on the file"),
        "{}",
        stderr(&o)
    );

    // What an earlier version left under UMask=0077: repaired by the next renewal.
    std::fs::set_permissions(
        setup.out.join("generations"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let o = can_read(&fullchain);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("no search (x) permission"),
        "{}",
        stderr(&o)
    );
    let o = renew_under_umask(&["renew", "--force"]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("had mode 700"), "{}", stderr(&o));
    assert_exit(&can_read(&fullchain), 0);
    let _ = nobody.kill();
    let _ = nobody.wait();
}
