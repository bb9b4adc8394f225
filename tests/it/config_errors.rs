//! Bad configuration is a usage error (exit 2) that names the key and the line.

use std::process::Command;

fn check(toml: &str, expect: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let o = Command::new(crate::common::bin())
        .arg("--config")
        .arg(&path)
        .args(["renew"])
        .output()
        .unwrap();
    crate::common::assert_exit(&o, 2);
    let err = crate::common::stderr(&o);
    assert!(
        err.contains(path.to_str().unwrap()),
        "the file is named: {err}"
    );
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    // Nothing may have been created for a config that was refused.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn unknown_key() {
    check("[output]\ndir = \"/tmp/x\"\nkepe = 3\n", &["kepe", ":3:"]);
}

#[test]
fn common_name_in_subject() {
    check(
        "[certificate]\nsubject = { C = \"US\", CN = \"my-host\" }\n",
        &["certificate.subject.CN", "common name", ":2:"],
    );
}

#[test]
fn key_bits_1024() {
    check(
        "[certificate]\nkey_bits = 1024\n",
        &["certificate.key_bits = 1024", ":2:"],
    );
}

#[test]
fn lifetime_not_a_duration() {
    check(
        "[certificate]\nlifetime = \"abc\"\n",
        &["certificate.lifetime", "\"abc\"", ":2:"],
    );
}

#[test]
fn missing_config_file_says_how_to_create_one() {
    let o = Command::new(crate::common::bin())
        .args(["--config", "/nonexistent/eit-certd.toml", "status"])
        .output()
        .unwrap();
    crate::common::assert_exit(&o, 2);
    assert!(crate::common::stderr(&o).contains("/nonexistent/eit-certd.toml"));
}

/// swanctl paths end up in swanctl.conf (`swanctl-config`): a newline or a brace there added a
/// whole connection of the writer's choosing, and `check` said OK.
#[test]
fn swanctl_paths_that_would_inject_into_swanctl_conf() {
    check(
        "[output.swanctl]\ncert = \"x509/a.pem\\n}\\nevil {\\n remote_addrs = 0.0.0.0/0\\n local { auth = psk }\"\n",
        &["output.swanctl", "holds '\\n'", "swanctl.conf", ":2:"],
    );
    check(
        "[output.swanctl]\ndir = \"/etc/swanctl{\"\n",
        &["output.swanctl.dir", "holds '{'", ":2:"],
    );
    check(
        "[output.swanctl]\nkey = \"private/a key.pem\"\n",
        &["holds ' '"],
    );
}
