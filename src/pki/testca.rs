//! A tiny CA for unit tests of `validate`: EC P-256 CA keys (fast), RSA-2048 leaf keys (what the
//! service certifies), and the malformed variants the rules must catch.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509Name, X509NameRef, X509};

pub struct TestCa {
    root: X509,
    inter: X509,
    inter_key: PKey<Private>,
}

pub struct Issued {
    pub certs: Vec<String>,
    pub key_der: Vec<u8>,
    pub serial_hex: String,
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().unwrap();
    n.append_entry_by_text("O", "testca").unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    n.build()
}

fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    openssl::rand::rand_bytes(&mut b).unwrap();
    format!("{prefix} {}", crate::text::hex_lower(&b))
}

#[allow(clippy::too_many_arguments)]
fn sign(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    public: &PKey<impl openssl::pkey::HasPublic>,
    signer: &PKey<Private>,
    ca: bool,
    start_offset: i64,
    lifetime: i64,
) -> X509 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(127, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(subject).unwrap();
    b.set_issuer_name(issuer).unwrap();
    b.set_pubkey(public).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now + start_offset).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + start_offset + lifetime).unwrap())
        .unwrap();
    let mut bc = BasicConstraints::new();
    if ca {
        bc.ca();
    }
    b.append_extension(bc.critical().build().unwrap()).unwrap();
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

fn pem(c: &X509) -> String {
    String::from_utf8(c.to_pem().unwrap()).unwrap()
}

impl TestCa {
    pub fn new() -> TestCa {
        let root_key = ec_key();
        let root_name = name(&unique("root"));
        let root = sign(
            &root_name, &root_name, &root_key, &root_key, true, -60, 86400,
        );
        let inter_key = ec_key();
        let inter = sign(
            &name(&unique("intermediate")),
            &root_name,
            &inter_key,
            &root_key,
            true,
            -60,
            86400,
        );
        TestCa {
            root,
            inter,
            inter_key,
        }
    }

    pub fn root_pem(&self) -> String {
        pem(&self.root)
    }

    pub fn intermediate_pem(&self) -> String {
        pem(&self.inter)
    }

    fn leaf(
        &self,
        issuer: &X509NameRef,
        signer: &PKey<Private>,
        start: i64,
        lifetime: i64,
    ) -> (X509, Vec<u8>) {
        let key = crate::pki::PrivateKey::generate(2048).unwrap();
        self.leaf_for(&key, issuer, signer, start, lifetime)
    }

    fn leaf_for(
        &self,
        key: &crate::pki::PrivateKey,
        issuer: &X509NameRef,
        signer: &PKey<Private>,
        start: i64,
        lifetime: i64,
    ) -> (X509, Vec<u8>) {
        let public = PKey::public_key_from_der(&key.public_key_der().unwrap()).unwrap();
        let cert = sign(
            &name("leaf"),
            issuer,
            &public,
            signer,
            false,
            start,
            lifetime,
        );
        (cert, key.public_key_der().unwrap())
    }

    fn issued(leaf: X509, key_der: Vec<u8>, chain: &X509) -> Issued {
        let serial = leaf
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string();
        Issued {
            certs: vec![pem(&leaf), pem(chain)],
            key_der,
            serial_hex: serial,
        }
    }

    /// A leaf valid from `start_offset` seconds from now for `lifetime` seconds.
    pub fn issue(&self, lifetime: i64, start_offset: i64) -> Issued {
        let (leaf, key) = self.leaf(
            self.inter.subject_name(),
            &self.inter_key,
            start_offset,
            lifetime,
        );
        TestCa::issued(leaf, key, &self.inter)
    }

    /// A chain `[leaf, intermediate]` certifying `key`.
    pub fn issue_for_key(&self, key: &crate::pki::PrivateKey, lifetime: i64) -> Vec<String> {
        let (leaf, _) = self.leaf_for(key, self.inter.subject_name(), &self.inter_key, 0, lifetime);
        vec![pem(&leaf), pem(&self.inter)]
    }

    /// A leaf that names `other`'s intermediate as issuer but is signed by ours.
    pub fn issue_for_intermediate_name_of(&self, other: &TestCa, lifetime: i64) -> Issued {
        let (leaf, key) = self.leaf(other.inter.subject_name(), &self.inter_key, 0, lifetime);
        TestCa::issued(leaf, key, &self.inter)
    }

    /// A leaf under an "intermediate" that lacks the CA flag.
    pub fn issue_under_non_ca(&self, lifetime: i64) -> Issued {
        let bogus_key = ec_key();
        let bogus = sign(
            &name(&unique("not-a-ca")),
            self.root.subject_name(),
            &bogus_key,
            &self.inter_key,
            false,
            -60,
            86400,
        );
        let (leaf, key) = self.leaf(bogus.subject_name(), &bogus_key, 0, lifetime);
        TestCa::issued(leaf, key, &bogus)
    }
}
