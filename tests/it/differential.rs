//! Differential test of [`validate`] against `openssl verify -x509_strict -auth_level 2`: a
//! generator of chains (good ones and one of each kind of bad), every certificate with key
//! identifiers so that `-x509_strict` applies, each judged by both. They must agree on accept
//! or refuse, and our refusal must name the rule the chain breaks.
//!
//! Also here: the identical-name cases (IBM's regional roots all share `CN=eit-root-ca`), read
//! through the directory loader as a user would configure them.
//!
//! Keys are made once (RSA-2048, RSA-1024 for the weak cases, EC P-256) and reused.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509};
use time::OffsetDateTime;

use eit_certd::config::CertificateConfig;
use eit_certd::pki::anchors::TrustAnchors;
use eit_certd::pki::validate::{validate, Rejection, Who, DEFAULT_SKEW};

struct Keys {
    root_a: PKey<Private>,
    root_b: PKey<Private>,
    inter: PKey<Private>,
    inter2: PKey<Private>,
    leaf: PKey<Private>,
    weak: PKey<Private>,
    ec: PKey<Private>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = |bits| PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        Keys {
            root_a: rsa(2048),
            root_b: rsa(2048),
            inter: rsa(2048),
            inter2: rsa(2048),
            leaf: rsa(2048),
            weak: rsa(1024),
            ec: PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap(),
        }
    })
}

#[derive(Clone, Copy, PartialEq)]
enum K {
    RootA,
    RootB,
    Inter,
    Inter2,
    Leaf,
    Weak,
    Ec,
}

impl K {
    fn key(self) -> &'static PKey<Private> {
        let k = keys();
        match self {
            K::RootA => &k.root_a,
            K::RootB => &k.root_b,
            K::Inter => &k.inter,
            K::Inter2 => &k.inter2,
            K::Leaf => &k.leaf,
            K::Weak => &k.weak,
            K::Ec => &k.ec,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Bc {
    Ca(Option<u32>),
    NotCa,
    Absent,
}

#[derive(Clone, Copy, PartialEq)]
enum Ku {
    CertSign,
    NoCertSign,
    Leaf,
}

/// One certificate to make.
#[derive(Clone)]
struct Spec {
    cn: &'static str,
    key: K,
    bc: Bc,
    ku: Ku,
    /// The digest its issuer signs it with.
    digest: fn() -> MessageDigest,
    /// Validity, in days from now.
    from: i64,
    to: i64,
    /// Version 1, no extensions at all.
    v1: bool,
    /// Subject and authority key identifiers.
    ids: bool,
}

fn ca(cn: &'static str, key: K) -> Spec {
    Spec {
        cn,
        key,
        bc: Bc::Ca(None),
        ku: Ku::CertSign,
        digest: MessageDigest::sha256,
        from: -1,
        to: 365,
        v1: false,
        ids: true,
    }
}

fn leaf() -> Spec {
    Spec {
        cn: "0717_5f6b1c5e-instance",
        key: K::Leaf,
        bc: Bc::NotCa,
        ku: Ku::Leaf,
        digest: MessageDigest::sha256,
        from: -1,
        to: 1,
        v1: false,
        ids: true,
    }
}

/// Something done to the chain beyond its certificates' contents.
#[derive(Clone, Copy, PartialEq)]
enum Twist {
    None,
    /// The response carries the root too.
    RootInResponse,
    /// The CA file holds another root with the same name instead of the real one.
    OtherRootSameName,
    /// The leaf names its intermediate as issuer but another key signs it.
    LeafSignedByStranger,
    /// The leaf's authorityKeyIdentifier is another CA's key identifier.
    LeafAkiOfOther,
}

struct Shape {
    name: &'static str,
    root: Spec,
    /// Top-down: the first is signed by the root, the leaf by the last.
    inters: Vec<Spec>,
    leaf: Spec,
    twist: Twist,
    /// `None`: both must accept. Otherwise both refuse, ours with a reason this accepts.
    refuse: Option<Rule>,
}

/// Which rejection names the rule a bad shape breaks, and a word its message must contain.
type Rule = (fn(&Rejection) -> bool, &'static str);

fn build(
    spec: &Spec,
    issuer: Option<(&X509, &PKey<Private>)>,
    aki_from: Option<&X509>,
    sign_with: Option<&PKey<Private>>,
) -> X509 {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("O", "differential").unwrap();
    name.append_entry_by_text("CN", spec.cn).unwrap();
    let name = name.build();
    let key = spec.key.key();
    let mut b = X509::builder().unwrap();
    b.set_version(if spec.v1 { 0 } else { 2 }).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(120, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&*name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now + spec.from * 86400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + spec.to * 86400).unwrap())
        .unwrap();
    if !spec.v1 {
        match spec.bc {
            Bc::Ca(path_len) => {
                let mut bc = BasicConstraints::new();
                bc.critical().ca();
                if let Some(n) = path_len {
                    bc.pathlen(n);
                }
                b.append_extension(bc.build().unwrap()).unwrap();
            }
            Bc::NotCa => b
                .append_extension(BasicConstraints::new().critical().build().unwrap())
                .unwrap(),
            Bc::Absent => {}
        }
        let ku = match spec.ku {
            Ku::CertSign => KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .digital_signature()
                .build(),
            Ku::NoCertSign => KeyUsage::new()
                .critical()
                .digital_signature()
                .crl_sign()
                .build(),
            Ku::Leaf => KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build(),
        };
        b.append_extension(ku.unwrap()).unwrap();
        if spec.ku == Ku::Leaf {
            b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
                .unwrap();
        }
    }
    if !spec.v1 && spec.ids {
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        if let Some(aki_cert) = aki_from.or(issuer.map(|(c, _)| c)) {
            let aki = AuthorityKeyIdentifier::new()
                .keyid(true)
                .build(&b.x509v3_context(Some(aki_cert), None))
                .unwrap();
            b.append_extension(aki).unwrap();
        }
    }
    let signer = sign_with.unwrap_or(issuer.map_or(key, |(_, k)| k));
    b.sign(signer, (spec.digest)()).unwrap();
    b.build()
}

fn pem(c: &X509) -> String {
    String::from_utf8(c.to_pem().unwrap()).unwrap()
}

/// The made certificates of one shape.
struct Made {
    /// What the CA file holds.
    ca_file: Vec<X509>,
    /// What the service sends, leaf first.
    response: Vec<X509>,
    /// The intermediates, for `-untrusted`.
    untrusted: Vec<X509>,
}

fn make(shape: &Shape) -> Made {
    let root = build(&shape.root, None, None, None);
    let mut chain = vec![root.clone()];
    let mut keys = vec![shape.root.key.key()];
    for spec in &shape.inters {
        let c = build(
            spec,
            Some((chain.last().unwrap(), keys.last().unwrap())),
            None,
            None,
        );
        chain.push(c);
        keys.push(spec.key.key());
    }
    let other_root = build(&ca(shape.root.cn, K::RootB), None, None, None);
    let issuer = (chain.last().unwrap(), *keys.last().unwrap());
    let leaf = match shape.twist {
        Twist::LeafSignedByStranger => {
            build(&shape.leaf, Some(issuer), None, Some(K::Inter2.key()))
        }
        Twist::LeafAkiOfOther => build(&shape.leaf, Some(issuer), Some(&other_root), None),
        _ => build(&shape.leaf, Some(issuer), None, None),
    };
    let untrusted: Vec<X509> = chain[1..].iter().rev().cloned().collect();
    let mut response = vec![leaf];
    response.extend(untrusted.iter().cloned());
    if shape.twist == Twist::RootInResponse {
        response.push(root.clone());
    }
    let ca_file = if shape.twist == Twist::OtherRootSameName {
        vec![other_root]
    } else {
        vec![root]
    };
    Made {
        ca_file,
        response,
        untrusted,
    }
}

fn shapes() -> Vec<Shape> {
    let root = || ca("eit-root-ca", K::RootA);
    let inter = || Spec {
        bc: Bc::Ca(Some(0)),
        ..ca("rfos-intermediate-ca1", K::Inter)
    };
    let standard = |name, root: Spec, inter: Spec, leaf: Spec, refuse| Shape {
        name,
        root,
        inters: vec![inter],
        leaf,
        twist: Twist::None,
        refuse,
    };
    macro_rules! rule {
        ($pat:pat, $word:expr) => {
            Some((|r: &Rejection| matches!(r, $pat), $word))
        };
    }
    let sha1 = MessageDigest::sha1;
    vec![
        // Accepted by both.
        standard(
            "good: root, intermediate, leaf",
            root(),
            inter(),
            leaf(),
            None,
        ),
        Shape {
            name: "good: two intermediates (pathlen 1 above pathlen 0)",
            inters: vec![
                Spec {
                    bc: Bc::Ca(Some(1)),
                    ..ca("policy-ca", K::Inter2)
                },
                inter(),
            ],
            ..standard("", root(), inter(), leaf(), None)
        },
        standard(
            "good: root with pathlen 1 above one intermediate",
            Spec {
                bc: Bc::Ca(Some(1)),
                ..root()
            },
            inter(),
            leaf(),
            None,
        ),
        standard(
            "good: SHA-512 intermediate, SHA-384 leaf",
            root(),
            Spec {
                digest: MessageDigest::sha512,
                ..inter()
            },
            Spec {
                digest: MessageDigest::sha384,
                ..leaf()
            },
            None,
        ),
        standard(
            "good: EC P-256 intermediate",
            root(),
            Spec {
                key: K::Ec,
                ..inter()
            },
            leaf(),
            None,
        ),
        standard(
            "good: intermediate named like its root (IBM Montreal)",
            ca("IBM Cloud", K::RootA),
            Spec {
                cn: "IBM Cloud ",
                ..inter()
            },
            leaf(),
            None,
        ),
        standard(
            "good: self-issued intermediate under a pathlen 0 root",
            Spec {
                bc: Bc::Ca(Some(0)),
                ..ca("IBM Cloud", K::RootA)
            },
            Spec {
                cn: "IBM Cloud ",
                ..inter()
            },
            leaf(),
            None,
        ),
        Shape {
            twist: Twist::RootInResponse,
            ..standard(
                "good: the response carries the root too",
                root(),
                inter(),
                leaf(),
                None,
            )
        },
        standard(
            "good: X.509 v1 leaf without extensions (IBM's documented sample)",
            root(),
            inter(),
            Spec { v1: true, ..leaf() },
            None,
        ),
        standard(
            "good: intermediate without a pathLenConstraint",
            root(),
            ca("rfos-intermediate-ca1", K::Inter),
            leaf(),
            None,
        ),
        // Refused by both, ours naming the rule.
        standard(
            "bad: leaf signed with SHA-1",
            root(),
            inter(),
            Spec {
                digest: sha1,
                ..leaf()
            },
            rule!(
                Rejection::WeakSignature {
                    who: Who::Cert(0),
                    digest: "SHA-1",
                    ..
                },
                "SHA-1"
            ),
        ),
        standard(
            "bad: leaf signed with MD5",
            root(),
            inter(),
            Spec {
                digest: MessageDigest::md5,
                ..leaf()
            },
            rule!(
                Rejection::WeakSignature {
                    who: Who::Cert(0),
                    digest: "MD5",
                    ..
                },
                "MD5"
            ),
        ),
        standard(
            "bad: intermediate signed with SHA-1",
            root(),
            Spec {
                digest: sha1,
                ..inter()
            },
            leaf(),
            rule!(
                Rejection::WeakSignature {
                    who: Who::Cert(1),
                    digest: "SHA-1",
                    ..
                },
                "SHA-1"
            ),
        ),
        standard(
            "bad: EC intermediate signing the leaf with ECDSA-SHA1",
            root(),
            Spec {
                key: K::Ec,
                ..inter()
            },
            Spec {
                digest: sha1,
                ..leaf()
            },
            rule!(
                Rejection::WeakSignature {
                    who: Who::Cert(0),
                    digest: "SHA-1",
                    ..
                },
                "SHA-1"
            ),
        ),
        standard(
            "bad: 1024-bit intermediate signing with SHA-256",
            root(),
            Spec {
                key: K::Weak,
                ..inter()
            },
            leaf(),
            rule!(
                Rejection::WeakKey {
                    who: Who::Cert(1),
                    bits: 1024,
                    ..
                },
                "1024 bits"
            ),
        ),
        standard(
            "bad: 1024-bit intermediate signing with SHA-1",
            root(),
            Spec {
                key: K::Weak,
                ..inter()
            },
            Spec {
                digest: sha1,
                ..leaf()
            },
            rule!(
                Rejection::WeakKey { bits: 1024, .. } | Rejection::WeakSignature { .. },
                "refused"
            ),
        ),
        standard(
            "bad: 1024-bit root",
            ca("eit-root-ca", K::Weak),
            inter(),
            leaf(),
            rule!(
                Rejection::WeakKey {
                    who: Who::Anchor(_),
                    bits: 1024,
                    ..
                },
                "trust anchor"
            ),
        ),
        standard(
            "bad: 1024-bit leaf key",
            root(),
            inter(),
            Spec {
                key: K::Weak,
                ..leaf()
            },
            rule!(
                Rejection::WeakKey {
                    who: Who::Cert(0),
                    bits: 1024,
                    ..
                },
                "1024 bits"
            ),
        ),
        Shape {
            name: "bad: intermediate with pathlen 0 above a second CA",
            inters: vec![
                Spec {
                    bc: Bc::Ca(Some(0)),
                    ..ca("policy-ca", K::Inter2)
                },
                inter(),
            ],
            ..standard(
                "",
                root(),
                inter(),
                leaf(),
                rule!(
                    Rejection::PathLength {
                        who: Who::Cert(2),
                        max: 0,
                        below: 1,
                        ..
                    },
                    "pathLenConstraint"
                ),
            )
        },
        standard(
            "bad: root with pathlen 0 above an intermediate",
            Spec {
                bc: Bc::Ca(Some(0)),
                ..root()
            },
            inter(),
            leaf(),
            rule!(
                Rejection::PathLength {
                    who: Who::Anchor(_),
                    max: 0,
                    below: 1,
                    ..
                },
                "pathLenConstraint"
            ),
        ),
        standard(
            "bad: intermediate whose keyUsage lacks keyCertSign",
            root(),
            Spec {
                ku: Ku::NoCertSign,
                ..inter()
            },
            leaf(),
            rule!(
                Rejection::NoKeyCertSign {
                    who: Who::Cert(1),
                    ..
                },
                "keyCertSign"
            ),
        ),
        standard(
            "bad: root whose keyUsage lacks keyCertSign",
            Spec {
                ku: Ku::NoCertSign,
                ..root()
            },
            inter(),
            leaf(),
            rule!(
                Rejection::NoKeyCertSign {
                    who: Who::Anchor(_),
                    ..
                },
                "keyCertSign"
            ),
        ),
        standard(
            "bad: intermediate with basicConstraints cA false",
            root(),
            Spec {
                bc: Bc::NotCa,
                ..inter()
            },
            leaf(),
            rule!(
                Rejection::NotCa {
                    who: Who::Cert(1),
                    ..
                },
                "basicConstraints"
            ),
        ),
        standard(
            "bad: intermediate without basicConstraints",
            root(),
            Spec {
                bc: Bc::Absent,
                ..inter()
            },
            leaf(),
            rule!(
                Rejection::NotCa {
                    who: Who::Cert(1),
                    ..
                },
                "basicConstraints"
            ),
        ),
        standard(
            "bad: root with basicConstraints cA false",
            Spec {
                bc: Bc::NotCa,
                ..root()
            },
            inter(),
            leaf(),
            rule!(
                Rejection::NotCa {
                    who: Who::Anchor(_),
                    ..
                },
                "basicConstraints"
            ),
        ),
        standard(
            "bad: leaf expired",
            root(),
            inter(),
            Spec {
                from: -10,
                to: -1,
                ..leaf()
            },
            rule!(
                Rejection::Expired {
                    who: Who::Cert(0),
                    ..
                },
                "expired at"
            ),
        ),
        standard(
            "bad: intermediate expired",
            root(),
            Spec {
                from: -400,
                to: -1,
                ..inter()
            },
            leaf(),
            rule!(
                Rejection::Expired {
                    who: Who::Cert(1),
                    ..
                },
                "expired at"
            ),
        ),
        standard(
            "bad: root expired",
            Spec {
                from: -400,
                to: -1,
                ..root()
            },
            inter(),
            leaf(),
            rule!(
                Rejection::Expired {
                    who: Who::Anchor(_),
                    ..
                },
                "expired at"
            ),
        ),
        standard(
            "bad: intermediate not yet valid",
            root(),
            Spec {
                from: 2,
                to: 365,
                ..inter()
            },
            leaf(),
            rule!(
                Rejection::NotYetValid {
                    who: Who::Cert(1),
                    ..
                },
                "not valid before"
            ),
        ),
        standard(
            "bad: root not yet valid",
            Spec {
                from: 2,
                to: 365,
                ..root()
            },
            inter(),
            leaf(),
            rule!(
                Rejection::NotYetValid {
                    who: Who::Anchor(_),
                    ..
                },
                "not valid before"
            ),
        ),
        Shape {
            twist: Twist::LeafSignedByStranger,
            ..standard(
                "bad: leaf signed by a key other than its intermediate's",
                root(),
                inter(),
                leaf(),
                rule!(
                    Rejection::BadSignature {
                        index: 0,
                        issuer_index: 1,
                        ..
                    },
                    "is not signed by"
                ),
            )
        },
        Shape {
            twist: Twist::LeafAkiOfOther,
            ..standard(
                "bad: leaf's authorityKeyIdentifier names another CA",
                root(),
                inter(),
                leaf(),
                rule!(Rejection::BrokenChain { index: 0, .. }, "key identifier"),
            )
        },
        Shape {
            twist: Twist::OtherRootSameName,
            ..standard(
                "bad: pinned root has the issuer's name but another key",
                root(),
                inter(),
                leaf(),
                rule!(Rejection::UntrustedAnchor { .. }, "did not sign it"),
            )
        },
    ]
}

fn openssl_verify(dir: &Path, made: &Made) -> (bool, String) {
    let write = |name: &str, certs: &[X509]| {
        let path = dir.join(name);
        std::fs::write(&path, certs.iter().map(pem).collect::<String>()).unwrap();
        path
    };
    let root = write("root.pem", &made.ca_file);
    let leaf = write("leaf.pem", &made.response[..1]);
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-auth_level", "2", "-CAfile"])
        .arg(&root);
    if !made.untrusted.is_empty() {
        cmd.arg("-untrusted")
            .arg(write("untrusted.pem", &made.untrusted));
    }
    let out = cmd.arg(&leaf).output().expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().replace('\n', " | "))
}

#[test]
fn validation_agrees_with_openssl_verify_x509_strict_auth_level_2() {
    if Command::new("openssl").arg("version").output().is_err() {
        skipped!("validation_agrees_with_openssl_verify: no openssl program");
        return;
    }
    let started = Instant::now();
    keys();
    let keygen = started.elapsed();
    let tmp = tempfile::tempdir().unwrap();
    let shapes = shapes();
    assert!(shapes.len() >= 20, "{} shapes", shapes.len());
    let mut failures = Vec::new();
    let (mut ours_total, mut theirs_total) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for shape in &shapes {
        let made = make(shape);
        let t = Instant::now();
        let (openssl_ok, openssl_says) = openssl_verify(tmp.path(), &made);
        theirs_total += t.elapsed();
        let anchors_pem: String = made.ca_file.iter().map(pem).collect();
        let anchors =
            TrustAnchors::from_pem(anchors_pem.as_bytes(), Path::new("root.pem")).unwrap();
        let certificates: Vec<String> = made.response.iter().map(pem).collect();
        let our_key = shape.leaf.key.key().public_key_to_der().unwrap();
        let t = Instant::now();
        let ours = validate(
            &certificates,
            &our_key,
            Some(&anchors),
            OffsetDateTime::now_utc(),
            DEFAULT_SKEW,
        );
        ours_total += t.elapsed();
        let verdict = match &ours {
            Ok(_) => "accepted".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        eprintln!(
            "{:<62} openssl {:<7} ours {verdict}",
            shape.name,
            if openssl_ok { "accepts" } else { "refuses" },
        );
        let problem = match (&shape.refuse, openssl_ok, &ours) {
            (None, true, Ok(_)) => None,
            (Some((rule, word)), false, Err(e)) => (!rule(e) || !e.to_string().contains(word))
                .then(|| format!("refused for the wrong reason (expected {word:?}): {e}")),
            _ => Some(format!(
                "expected both to {}; openssl: {openssl_says}; ours: {verdict}",
                if shape.refuse.is_none() {
                    "accept"
                } else {
                    "refuse"
                }
            )),
        };
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", shape.name));
        }
    }
    eprintln!(
        "{} shapes; key generation {keygen:?}; openssl verify {theirs_total:?} in all, ours {ours_total:?} in all",
        shapes.len()
    );
    assert!(
        failures.is_empty(),
        "disagreements:\n{}",
        failures.join("\n")
    );
}

/// SHA-256 of the DER in lower-case hex, the form anchors are named by (the crate's own
/// `hex_lower` is private to it).
fn fingerprint(cert: &X509) -> String {
    eit_certd::text::hex_lower(&cert.digest(MessageDigest::sha256()).unwrap())
}

/// IBM's layout: one `type_ibmshare_root_<region>.crt` per regional root.
fn ibm_directory(roots: &[(&str, &X509)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (region, root) in roots {
        let path = dir.path().join(format!("type_ibmshare_root_{region}.crt"));
        std::fs::write(path, pem(root)).unwrap();
    }
    dir
}

/// Root `key` named `CN=eit-root-ca`, and `[leaf, intermediate]` under it; with or without
/// key identifiers (without them, only the signature can tell roots of one name apart).
fn ibm_chain(key: K, ids: bool) -> (X509, Vec<String>) {
    let root = build(
        &Spec {
            ids,
            ..ca("eit-root-ca", key)
        },
        None,
        None,
        None,
    );
    let inter_spec = Spec {
        ids,
        bc: Bc::Ca(Some(0)),
        ..ca("rfos-intermediate-ca1", K::Inter)
    };
    let inter = build(&inter_spec, Some((&root, key.key())), None, None);
    let leaf = build(
        &Spec { ids, ..leaf() },
        Some((&inter, K::Inter.key())),
        None,
        None,
    );
    (root, vec![pem(&leaf), pem(&inter)])
}

fn anchors_from(dir: &Path) -> TrustAnchors {
    let config = CertificateConfig {
        trust_anchor: Some(dir.to_path_buf()),
        ..Default::default()
    };
    TrustAnchors::load_at(&config, OffsetDateTime::now_utc())
        .unwrap()
        .unwrap()
}

#[test]
fn of_two_roots_with_one_name_the_one_that_signed_is_the_anchor() {
    let our_key = K::Leaf.key().public_key_to_der().unwrap();
    for ids in [true, false] {
        let other = build(
            &Spec {
                ids,
                ..ca("eit-root-ca", K::RootA)
            },
            None,
            None,
            None,
        );
        let (signer, certificates) = ibm_chain(K::RootB, ids);
        // The other root sorts (and so loads) first.
        let dir = ibm_directory(&[("au-syd", &other), ("us-south", &signer)]);
        let anchors = anchors_from(dir.path());
        assert_eq!(anchors.anchors().len(), 2);
        let verified = validate(
            &certificates,
            &our_key,
            Some(&anchors),
            OffsetDateTime::now_utc(),
            DEFAULT_SKEW,
        )
        .unwrap_or_else(|e| panic!("key identifiers {ids}: {e}"));
        let anchor = verified.anchor.unwrap();
        assert_eq!(anchor.fingerprint_sha256, fingerprint(&signer), "ids {ids}");
        assert!(
            anchor
                .source
                .unwrap()
                .ends_with("type_ibmshare_root_us-south.crt"),
            "ids {ids}"
        );
    }
}

#[test]
fn when_neither_root_with_the_name_signed_both_are_named_by_fingerprint() {
    let our_key = K::Leaf.key().public_key_to_der().unwrap();
    for ids in [true, false] {
        let a = build(
            &Spec {
                ids,
                ..ca("eit-root-ca", K::RootA)
            },
            None,
            None,
            None,
        );
        let b = build(
            &Spec {
                ids,
                ..ca("eit-root-ca", K::RootB)
            },
            None,
            None,
            None,
        );
        let (_, certificates) = ibm_chain(K::Inter2, ids);
        let dir = ibm_directory(&[("eu-de", &a), ("jp-tok", &b)]);
        let anchors = anchors_from(dir.path());
        let e = validate(
            &certificates,
            &our_key,
            Some(&anchors),
            OffsetDateTime::now_utc(),
            DEFAULT_SKEW,
        )
        .unwrap_err();
        let Rejection::UntrustedAnchor { candidates, .. } = &e else {
            panic!("ids {ids}: {e:?}");
        };
        assert_eq!(candidates.len(), 2, "ids {ids}: {e}");
        let text = e.to_string();
        for (cert, file) in [(&a, "eu-de"), (&b, "jp-tok")] {
            assert!(text.contains(&fingerprint(cert)), "ids {ids}: {text}");
            assert!(
                text.contains(&format!("type_ibmshare_root_{file}.crt")),
                "ids {ids}: {text}"
            );
        }
        assert!(
            text.contains("none of the 2 configured trust anchors with that name signed it"),
            "{text}"
        );
    }
}
