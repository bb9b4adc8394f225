//! Trust anchors as a user pins them (a directory of IBM-style `type_ibmshare_root_<region>.crt`
//! files), through the real binary against the real emulator: matching by key not name,
//! reloading when the directory changes, and warnings when a CA expires within 270 days.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509Name, X509};

use crate::common::*;

/// A self-signed RSA-2048 CA named exactly like the emulator's root, with its own key.
fn look_alike_of(ca_pem: &Path) -> X509 {
    let real = X509::from_pem(&std::fs::read(ca_pem).unwrap()).unwrap();
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    ca_cert(real.subject_name(), None, &key, &key, 3650)
}

fn ca_cert(
    subject: &openssl::x509::X509NameRef,
    issuer: Option<&X509>,
    key: &PKey<Private>,
    signer: &PKey<Private>,
    days: u32,
) -> X509 {
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand_u32()).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(subject).unwrap();
    b.set_issuer_name(issuer.map_or(subject, |i| i.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|i| &**i), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_le_bytes(b) >> 1
}

fn fingerprint(cert: &X509) -> String {
    cert.digest(MessageDigest::sha256())
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Puts `pem` into `dir` as `name` the way an installer would: written aside, renamed in.
fn install_file(dir: &Path, name: &str, pem: &[u8]) -> PathBuf {
    let tmp = dir.join(format!("{name}.partial"));
    std::fs::write(&tmp, pem).unwrap();
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A setup whose `certificate.trust_anchor` is a directory (created empty).
fn setup_pinning_a_directory(emulator: &Emulator, extra: &str) -> (Setup, PathBuf) {
    let setup = Setup::new(emulator, 2048, "", extra);
    let roots = setup.tmp.path().join("ibm-roots");
    std::fs::create_dir(&roots).unwrap();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let text = text.replacen(
        "[certificate]\n",
        &format!("[certificate]\ntrust_anchor = \"{}\"\n", roots.display()),
        1,
    );
    std::fs::write(&setup.config, text).unwrap();
    (setup, roots)
}

#[test]
fn a_root_with_the_right_name_but_another_key_is_refused_by_fingerprint() {
    let emulator = Emulator::start(&[]);
    let (setup, roots) = setup_pinning_a_directory(&emulator, "");
    let metrics = setup.tmp.path().join("eit-certd.prom");
    setup.add_output_settings(&format!("metrics_file = \"{}\"", metrics.display()));
    let look_alike = look_alike_of(&emulator.ca_pem());
    install_file(
        &roots,
        "type_ibmshare_root_us-south.crt",
        &look_alike.to_pem().unwrap(),
    );

    let o = setup.run(&["renew"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("does not end at a configured trust anchor"),
        "{err}"
    );
    assert!(err.contains(&fingerprint(&look_alike)), "{err}");
    assert!(err.contains("type_ibmshare_root_us-south.crt"), "{err}");
    assert!(setup.generations().is_empty());

    // The real root joins it: the one whose key signed is the anchor.
    let real = X509::from_pem(&std::fs::read(emulator.ca_pem()).unwrap()).unwrap();
    install_file(
        &roots,
        "type_ibmshare_root_eu-de.crt",
        &std::fs::read(emulator.ca_pem()).unwrap(),
    );
    let o = setup.run(&["renew"]);
    assert_exit(&o, 0);

    let s = setup.run(&["status", "--json"]);
    assert_exit(&s, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&s)).unwrap();
    let anchor = &report["ca"]["anchor"];
    assert_eq!(anchor["fingerprint_sha256"], fingerprint(&real), "{report}");
    assert!(
        anchor["source"]
            .as_str()
            .unwrap()
            .ends_with("type_ibmshare_root_eu-de.crt"),
        "{report}"
    );
    assert!(
        report["ca"]["intermediate"]["subject"]
            .as_str()
            .unwrap()
            .contains("Intermediate CA"),
        "{report}"
    );
    assert_eq!(report["ca"]["warnings"], serde_json::json!([]), "{report}");
    let text = stdout(&setup.run(&["status"]));
    assert!(
        text.contains("\nanchor        O=eit-certd emulator"),
        "{text}"
    );

    let root_not_after = openssl_time(real.not_after());
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains(&format!(
            "eit_certd_ca_not_after_seconds{{role=\"anchor\"}} {root_not_after}\n"
        )),
        "{prom}"
    );
    assert!(
        prom.contains("eit_certd_ca_not_after_seconds{role=\"intermediate\"} "),
        "{prom}"
    );
}

fn openssl_time(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = Asn1Time::from_unix(0).unwrap();
    let d = epoch.diff(t).unwrap();
    i64::from(d.days) * 86400 + i64::from(d.secs)
}

#[test]
fn the_daemon_reloads_anchors_when_their_directory_changes() {
    let emulator = Emulator::start(&[]);
    let (setup, roots) = setup_pinning_a_directory(&emulator, "");
    install_file(
        &roots,
        "type_ibmshare_root_us-south.crt",
        &look_alike_of(&emulator.ca_pem()).to_pem().unwrap(),
    );
    let mut daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(30), "the refusal", || {
        daemon
            .log_text()
            .contains("does not end at a configured trust anchor")
            .then_some(())
    });

    install_file(
        &roots,
        "type_ibmshare_root_eu-de.crt",
        &std::fs::read(emulator.ca_pem()).unwrap(),
    );
    wait_for(Duration::from_secs(30), "an install", || {
        daemon
            .log_text()
            .contains("installed a new certificate")
            .then_some(())
    });
    let log = daemon.log_text();
    assert!(log.contains("trust anchors reloaded"), "{log}");
    let (ok, out) = openssl_verify(&emulator.ca_pem(), &setup.current(), None);
    assert!(ok, "{out}");

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
}

/// A set as if installed earlier: leaf (for a fresh key) under an intermediate that expires in
/// 100 days, under a ten-year root.
fn install_set_with_an_expiring_intermediate(out: &Path) -> X509 {
    let root_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", "eit-root-ca").unwrap();
    let root = ca_cert(&name.build(), None, &root_key, &root_key, 3650);
    let inter_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", "rfos-intermediate-ca1")
        .unwrap();
    let inter = ca_cert(&name.build(), Some(&root), &inter_key, &root_key, 100);
    let leaf_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", "leaf").unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_issuer_name(inter.subject_name()).unwrap();
    b.set_pubkey(&leaf_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&inter_key, MessageDigest::sha256()).unwrap();
    let leaf = b.build();

    let dir = out.join("generations/000001-20260101T000000Z-01");
    std::fs::create_dir_all(&dir).unwrap();
    let key = leaf_key.private_key_to_pem_pkcs8().unwrap();
    let cert = leaf.to_pem().unwrap();
    let chain = inter.to_pem().unwrap();
    let write = |name: &str, bytes: &[u8], mode| {
        std::fs::write(dir.join(name), bytes).unwrap();
        std::fs::set_permissions(
            dir.join(name),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
    };
    write("key.pem", &key, 0o600);
    write("cert.pem", &cert, 0o644);
    write("chain.pem", &chain, 0o644);
    write(
        "fullchain.pem",
        &[cert.clone(), chain.clone()].concat(),
        0o644,
    );
    write("combined.pem", &[key, cert, chain].concat(), 0o600);
    std::os::unix::fs::symlink(
        "generations/000001-20260101T000000Z-01",
        out.join("current"),
    )
    .unwrap();
    root
}

#[test]
fn an_intermediate_expiring_within_270_days_is_warned_about() {
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let metrics = setup.tmp.path().join("eit-certd.prom");
    setup.add_output_settings(&format!("metrics_file = \"{}\"", metrics.display()));
    let root = install_set_with_an_expiring_intermediate(&setup.out);
    let root_file = setup.tmp.path().join("root.pem");
    std::fs::write(&root_file, root.to_pem().unwrap()).unwrap();
    let text = std::fs::read_to_string(&setup.config).unwrap().replacen(
        "[certificate]\n",
        &format!(
            "[certificate]\ntrust_anchor = \"{}\"\n",
            root_file.display()
        ),
        1,
    );
    std::fs::write(&setup.config, text).unwrap();

    let s = setup.run(&["status"]);
    assert_exit(&s, 0);
    let text = stdout(&s);
    assert!(
        text.contains("WARNING       the intermediate CA CN=rfos-intermediate-ca1"),
        "{text}"
    );
    assert!(
        text.contains("(in 99 days)") || text.contains("(in 100 days)"),
        "{text}"
    );
    assert!(
        !text.contains("the anchor CA"),
        "a ten-year root is fine: {text}"
    );
    assert!(
        text.contains("\nanchor        CN=eit-root-ca until "),
        "{text}"
    );

    // The daemon says so when it starts, and exports both dates.
    let mut daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(30), "the warning", || {
        daemon
            .log_text()
            .contains("the intermediate CA CN=rfos-intermediate-ca1")
            .then_some(())
    });
    wait_for(Duration::from_secs(30), "the metrics file", || {
        std::fs::read_to_string(&metrics)
            .ok()
            .filter(|m| m.contains("eit_certd_ca_not_after_seconds{role=\"anchor\"}"))
    });
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("eit_certd_ca_not_after_seconds{role=\"intermediate\"} "),
        "{prom}"
    );
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn check_and_renew_name_an_unusable_anchor_directory() {
    let emulator = Emulator::start(&[]);
    let (setup, roots) = setup_pinning_a_directory(&emulator, "");
    std::fs::write(roots.join("README.txt"), "IBM roots go here").unwrap();

    let o = setup.run(&["check"]);
    assert_exit(&o, 2);
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "problem: certificate.trust_anchor: the directory {} holds no *.pem or *.crt file",
            roots.display()
        )),
        "{out}"
    );

    let o = setup.run(&["renew"]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "certificate.trust_anchor: the directory {} holds no *.pem or *.crt file",
            roots.display()
        )),
        "{err}"
    );
    assert!(setup.generations().is_empty());
}
