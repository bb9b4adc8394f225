//! The spare key on disk (`output.dir/spare/`): a daemon prepares it after an install, a later
//! process (a restart over an expired set) renews with it without generating a key, it is used
//! once and replaced, and a spare that is not ours, not a regular file, open to others or made
//! for another config is refused and regenerated.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn spare_key(setup: &Setup) -> PathBuf {
    setup.out.join("spare").join("key.pem")
}

/// The spare key's public key, once the spare is complete (its key is written last).
fn spare_pubkey(setup: &Setup) -> Option<String> {
    let key = spare_key(setup);
    std::fs::symlink_metadata(&key)
        .ok()?
        .is_file()
        .then(|| pubkey_of_key(&key))
}

fn set_min_interval(setup: &Setup, value: &str) {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let start = text.find("min_interval = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!(
        "{}min_interval = \"{value}\"{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&setup.config, text).unwrap();
}

fn cert_expired(setup: &Setup) -> bool {
    let cert = setup.current().join("cert.pem");
    // `-checkend 0` fails once the certificate has expired.
    !Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "0", "-in"])
        .arg(&cert)
        .output()
        .unwrap()
        .status
        .success()
}

/// Phase one: a daemon installs a 6 s certificate from a first emulator and prepares a spare,
/// held from renewing again by a long `min_interval`, and is stopped; then the set expires.
/// Phase two talks to `next`, which issues hour-long certificates (so the restarted daemon then
/// stays idle). Returns the spare's public key.
fn spare_then_expired_set(setup: &Setup, next: &Emulator) -> String {
    set_min_interval(setup, "1h");
    let mut daemon = DaemonProc::start(setup);
    wait_for(Duration::from_secs(60), "the spare on disk", || {
        daemon
            .log_text()
            .contains("spare key and CSR for the next renewal are ready on disk")
            .then_some(())
    });
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), Some(0));
    let spare = spare_pubkey(setup).expect("the spare survives the daemon's stop");
    assert_eq!(mode(&spare_key(setup)), 0o600);
    assert_ne!(spare, pubkey_of_key(&setup.current().join("key.pem")));
    wait_for(Duration::from_secs(30), "the set to expire", || {
        cert_expired(setup).then_some(())
    });
    set_min_interval(setup, "1s");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let start = text.find("endpoint = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!(
        "{}endpoint = \"{}\"{}",
        &text[..start],
        next.url,
        &text[end..]
    );
    std::fs::write(&setup.config, text).unwrap();
    spare
}

/// Phase two: a daemon started over the expired set; returns it once it has installed.
fn restart_until_installed(setup: &Setup) -> DaemonProc {
    let daemon = DaemonProc::start(setup);
    wait_for(
        Duration::from_secs(60),
        "an install after the restart",
        || {
            daemon
                .log_text()
                .contains("installed a new certificate")
                .then_some(())
        },
    );
    daemon
}

#[test]
fn a_restart_over_an_expired_set_uses_the_spare_once_and_replaces_it() {
    let short = Emulator::start(&["--max-lifetime", "6s"]);
    let long = Emulator::start(&[]);
    let setup = Setup::new(&short, 2048, "", "");
    let spare = spare_then_expired_set(&setup, &long);

    let daemon = restart_until_installed(&setup);
    let log = daemon.log_text();
    assert!(
        log.contains("using the spare key and CSR prepared on disk"),
        "{log}"
    );
    assert!(
        !log.contains("generating a key"),
        "no key was generated: {log}"
    );
    let installed = pubkey_of_key(&setup.current().join("key.pem"));
    assert_eq!(installed, spare, "the installed key is the spare");

    // Replaced after use: a new spare, neither the used one nor the installed one.
    let next = wait_for(Duration::from_secs(60), "a new spare", || {
        spare_pubkey(&setup).filter(|k| *k != spare)
    });
    assert_ne!(next, installed);
    let status = setup.run(&["status"]);
    assert!(
        stdout(&status).contains("spare key     ready"),
        "{}",
        stdout(&status)
    );
    drop(daemon);

    // Never reused: the next renewal takes the new spare, and no generation's key repeats.
    let daemon = DaemonProc::start(&setup);
    // Signalled only once it is up: SIGUSR1's default action would end it.
    wait_for(Duration::from_secs(30), "the daemon to start", || {
        daemon
            .log_text()
            .contains("installed certificate is valid")
            .then_some(())
    });
    daemon.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for(Duration::from_secs(60), "the second install", || {
        (pubkey_of_key(&setup.current().join("key.pem")) == next).then_some(())
    });
    drop(daemon);
    let mut keys: Vec<String> = setup
        .generations()
        .iter()
        .map(|g| pubkey_of_key(&setup.out.join("generations").join(g).join("key.pem")))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a key was installed twice");
}

/// Tampers with the spare between the two phases, and checks that the restart refuses it
/// (saying why), generates a key, installs it and prepares a sound new spare.
fn refused_after(tamper: impl FnOnce(&Setup), why: &str) {
    let short = Emulator::start(&["--max-lifetime", "6s"]);
    let long = Emulator::start(&[]);
    let setup = Setup::new(&short, 2048, "", "");
    let spare = spare_then_expired_set(&setup, &long);
    tamper(&setup);

    let daemon = restart_until_installed(&setup);
    let log = daemon.log_text();
    assert!(log.contains(why), "expected {why:?} in: {log}");
    assert!(log.contains("generating a key"), "{log}");
    let installed = pubkey_of_key(&setup.current().join("key.pem"));
    assert_ne!(installed, spare, "the refused spare was not used");
    let next = wait_for(Duration::from_secs(60), "a new spare", || {
        spare_pubkey(&setup).filter(|k| *k != spare && *k != installed)
    });
    assert!(!next.is_empty());
    let key = spare_key(&setup);
    let meta = std::fs::symlink_metadata(&key).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        nix::unistd::geteuid().as_raw()
    );
}

#[test]
fn a_spare_open_to_others_is_refused() {
    refused_after(
        |s| std::fs::set_permissions(spare_key(s), std::fs::Permissions::from_mode(0o644)).unwrap(),
        "readable by others",
    );
}

#[test]
fn a_spare_that_is_a_symlink_is_refused() {
    refused_after(
        |s| {
            let key = spare_key(s);
            let moved = s.tmp.path().join("moved-key.pem");
            std::fs::rename(&key, &moved).unwrap();
            std::os::unix::fs::symlink(&moved, &key).unwrap();
        },
        "is a symlink",
    );
}

#[test]
fn a_spare_that_is_a_fifo_is_refused() {
    refused_after(
        |s| {
            let key = spare_key(s);
            std::fs::remove_file(&key).unwrap();
            nix::unistd::mkfifo(&key, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        },
        "a FIFO, not a regular file",
    );
}

#[test]
fn a_spare_owned_by_someone_else_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        skipped!("a_spare_owned_by_someone_else_is_refused: needs root to chown");
        return;
    }
    refused_after(
        |s| {
            nix::unistd::chown(&spare_key(s), Some(nix::unistd::Uid::from_raw(65534)), None)
                .unwrap()
        },
        "not by us",
    );
}

#[test]
fn a_spare_for_another_key_size_is_refused() {
    refused_after(
        |s| {
            let text = std::fs::read_to_string(&s.config).unwrap();
            std::fs::write(
                &s.config,
                text.replace("key_bits = 2048", "key_bits = 3072"),
            )
            .unwrap();
        },
        "no longer certificate.key_bits",
    );
}

#[test]
fn a_spare_for_another_subject_is_used_with_a_new_csr() {
    let short = Emulator::start(&["--max-lifetime", "6s"]);
    let long = Emulator::start(&[]);
    let setup = Setup::new(&short, 2048, "", "");
    let spare = spare_then_expired_set(&setup, &long);
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("O = \"eit-certd tests\"", "O = \"Other Org\""),
    )
    .unwrap();
    let daemon = restart_until_installed(&setup);
    let log = daemon.log_text();
    assert!(!log.contains("generating a key"), "{log}");
    assert_eq!(pubkey_of_key(&setup.current().join("key.pem")), spare);
    // The service saw a CSR with the new subject.
    let (ok, subject) = run_tool(
        "openssl",
        &[
            "x509",
            "-noout",
            "-subject",
            "-in",
            setup.current().join("cert.pem").to_str().unwrap(),
        ],
    );
    assert!(ok && subject.contains("Other Org"), "{subject}");
}

#[test]
fn spare_key_false_keeps_no_key_at_rest() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("min_interval = ", "spare_key = false\nmin_interval = "),
    )
    .unwrap();
    let daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(60), "the next key", || {
        daemon
            .log_text()
            .contains("the next key is ready (generated ahead of time)")
            .then_some(())
    });
    drop(daemon);
    assert!(!setup.out.join("spare").exists());
    let status = setup.run(&["status"]);
    assert!(
        stdout(&status).contains("spare key     off"),
        "{}",
        stdout(&status)
    );
    let _ = Path::new("");
}

/// Replaces the spare's CSR with one for its key and `subject`, signed by openssl.
fn sign_spare_csr(setup: &Setup, subject: &str) {
    let dir = setup.out.join("spare");
    let (ok, out) = run_tool(
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            dir.join("key.pem").to_str().unwrap(),
            "-subj",
            subject,
            "-out",
            dir.join("csr.pem").to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
}

/// A spare whose spare.json names the configured subject but whose CSR asks for another: the
/// certificate carried the planted subject. The CSR's own subject decides now.
#[test]
fn a_spare_whose_csr_asks_for_another_subject_than_it_claims_is_refused() {
    refused_after(
        |s| {
            sign_spare_csr(s, "/C=XX/O=Planted Org");
        },
        "its subject is not the one spare.json names",
    );
}

/// A spare holding the key of an older generation still on disk: one key, two certificates.
/// Every generation's key counts as used, not only the installed one's.
#[test]
fn a_spare_holding_an_older_generations_key_is_refused() {
    refused_after(
        |s| {
            let dir = s.out.join("spare");
            let old = s.out.join("generations/000000-20200101T000000Z-0LD");
            std::fs::create_dir(&old).unwrap();
            let key = s.tmp.path().join("old-key.pem");
            let (ok, out) = run_tool(
                "openssl",
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=old",
                    "-keyout",
                    key.to_str().unwrap(),
                    "-out",
                    old.join("cert.pem").to_str().unwrap(),
                ],
            );
            assert!(ok, "{out}");
            std::fs::copy(&key, dir.join("key.pem")).unwrap();
            std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            sign_spare_csr(s, "/C=US/O=eit-certd tests");
        },
        "the key of a certificate already installed",
    );
}

/// A spare key.pem that is a hard link to another file: the discard overwrote that file with
/// zeros. A hard-linked spare is refused and unlinked, never overwritten.
#[test]
fn a_hard_linked_spare_is_refused_and_its_other_name_left_intact() {
    let victim = std::sync::Mutex::new(None);
    // Outside the setup, which is gone when refused_after returns.
    let outside = tempfile::tempdir().unwrap();
    refused_after(
        |s| {
            let other = outside.path().join("other-name.pem");
            std::fs::hard_link(s.out.join("spare/key.pem"), &other).unwrap();
            *victim.lock().unwrap() = Some((other.clone(), std::fs::read(&other).unwrap()));
        },
        "hard links",
    );
    let (path, before) = victim.lock().unwrap().take().unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the other name was overwritten"
    );
}

/// `spare_key = false` on a machine that had a spare: it is removed (it stayed on disk forever
/// while `status` said the spare was off).
#[test]
fn turning_the_spare_off_removes_the_one_on_disk() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    set_min_interval(&setup, "1h");
    let daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(60), "the spare on disk", || {
        spare_pubkey(&setup)
    });
    drop(daemon);
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("min_interval = ", "spare_key = false\nmin_interval = "),
    )
    .unwrap();
    let daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(60), "the spare to go", || {
        daemon
            .log_text()
            .contains("removed the spare key left on disk")
            .then_some(())
    });
    assert!(!setup.out.join("spare").exists());
}
