//! The emulator's certificate authority: a root and an intermediate generated at start,
//! issuing instance identity leaves from CSRs and the HTTPS server certificate.

use std::sync::OnceLock;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509NameRef, X509Ref, X509};
use time::OffsetDateTime;

use super::{clock, ids};

/// Key size of every key the emulator makes. 2048 is what the service itself requires of
/// CSRs and keeps start-up fast.
const KEY_BITS: u32 = 2048;
const ORGANIZATION: &str = "eit-certd emulator";
pub(crate) const ROOT_CN: &str = "eit-certd emulator Root CA";
pub(crate) const INTERMEDIATE_CN: &str = "eit-certd emulator Intermediate CA";
const ROOT_YEARS: i64 = 10;
const INTERMEDIATE_YEARS: i64 = 5;
const SERVER_YEARS: i64 = 1;
/// CA certificates start a little in the past so that a verifier whose clock lags ours
/// still accepts them.
const CA_BACKDATE: time::Duration = time::Duration::hours(1);
/// Names the HTTPS server answers to: local use, and the real service's host name so a
/// client pointed at it through /etc/hosts sees a matching certificate.
const SERVER_DNS_NAMES: &[&str] = &["localhost", "api.metadata.cloud.ibm.com"];
const SERVER_IPS: &[&str] = &["127.0.0.1"];

/// A certificate with its private key.
pub(crate) struct KeyedCert {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// The root and intermediate CA.
pub(crate) struct Authority {
    root: KeyedCert,
    intermediate: KeyedCert,
    root_pem: String,
    intermediate_pem: String,
    /// A key that belongs to no certificate in the chain, made on first use: the fault modes
    /// sign with it (`bad-signature`) or certify it (`wrong-key`).
    stranger: OnceLock<PKey<Private>>,
}

/// Who signs a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signer {
    /// The intermediate, as the service does.
    Intermediate,
    /// The stranger key, while the leaf still names the intermediate as its issuer.
    Stranger,
}

/// A freshly signed leaf, with the validity it was given.
pub(crate) struct IssuedLeaf {
    pub pem: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Authority {
    /// Generates both CA keys and certificates. Slow (RSA key generation): call it on a
    /// blocking thread.
    pub fn generate() -> Result<Self, ErrorStack> {
        let now = clock::now();
        let root = self_signed_root(now)?;
        let intermediate = intermediate(&root, now)?;
        Ok(Authority {
            root_pem: pem(&root.cert)?,
            intermediate_pem: pem(&intermediate.cert)?,
            root,
            intermediate,
            stranger: OnceLock::new(),
        })
    }

    /// The stranger key (see the field), generated on first use. Slow the first time.
    pub fn stranger(&self) -> Result<&PKey<Private>, ErrorStack> {
        if let Some(key) = self.stranger.get() {
            return Ok(key);
        }
        let key = new_key()?;
        // Two racing first uses both generate; one key wins and both use it.
        Ok(self.stranger.get_or_init(|| key))
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// Signs an instance identity certificate for `public_key`: the requested subject plus
    /// CN = `instance_id`, valid from `not_before` for `lifetime`, client authentication only.
    /// The leaf names the intermediate as its issuer whoever `signer` is.
    pub fn issue_leaf(
        &self,
        signer: Signer,
        subject: &X509NameRef,
        public_key: &PKeyRef<Public>,
        instance_id: &str,
        not_before: OffsetDateTime,
        lifetime: time::Duration,
    ) -> Result<IssuedLeaf, ErrorStack> {
        let signing_key = match signer {
            Signer::Intermediate => &self.intermediate.key,
            Signer::Stranger => self.stranger()?,
        };
        let mut name = X509NameBuilder::new()?;
        for entry in subject.entries() {
            name.append_entry(entry)?;
        }
        name.append_entry_by_nid(Nid::COMMONNAME, instance_id)?;
        let name = name.build();

        let not_after = not_before + lifetime;
        let mut b = builder(&name, self.intermediate.cert.subject_name(), public_key)?;
        set_validity(&mut b, not_before, not_after)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        append_key_identifiers(&mut b, Some(&self.intermediate.cert))?;
        b.sign(signing_key, MessageDigest::sha256())?;
        let cert = b.build();
        Ok(IssuedLeaf {
            pem: pem(&cert)?,
            not_before,
            not_after,
        })
    }

    /// A TLS server certificate for the emulator's own HTTPS listener, signed by the root
    /// so that trusting `ca.pem` is all a client needs.
    pub fn issue_server_cert(&self) -> Result<KeyedCert, ErrorStack> {
        let key = new_key()?;
        let name = name(&[
            (Nid::ORGANIZATIONNAME, ORGANIZATION),
            (Nid::COMMONNAME, "localhost"),
        ])?;
        let now = clock::now();
        let mut b = builder(&name, self.root.cert.subject_name(), &key)?;
        set_validity(&mut b, now - CA_BACKDATE, now + years(SERVER_YEARS))?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let mut san = SubjectAlternativeName::new();
        for dns in SERVER_DNS_NAMES {
            san.dns(dns);
        }
        for ip in SERVER_IPS {
            san.ip(ip);
        }
        let san = san.build(&b.x509v3_context(Some(&self.root.cert), None))?;
        b.append_extension(san)?;
        append_key_identifiers(&mut b, Some(&self.root.cert))?;
        b.sign(&self.root.key, MessageDigest::sha256())?;
        Ok(KeyedCert {
            cert: b.build(),
            key,
        })
    }
}

fn self_signed_root(now: OffsetDateTime) -> Result<KeyedCert, ErrorStack> {
    let key = new_key()?;
    let name = name(&[
        (Nid::ORGANIZATIONNAME, ORGANIZATION),
        (Nid::COMMONNAME, ROOT_CN),
    ])?;
    let mut b = builder(&name, &name, &key)?;
    set_validity(&mut b, now - CA_BACKDATE, now + years(ROOT_YEARS))?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    append_key_identifiers(&mut b, None)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(KeyedCert {
        cert: b.build(),
        key,
    })
}

fn intermediate(root: &KeyedCert, now: OffsetDateTime) -> Result<KeyedCert, ErrorStack> {
    let key = new_key()?;
    let name = name(&[
        (Nid::ORGANIZATIONNAME, ORGANIZATION),
        (Nid::COMMONNAME, INTERMEDIATE_CN),
    ])?;
    let mut b = builder(&name, root.cert.subject_name(), &key)?;
    set_validity(&mut b, now - CA_BACKDATE, now + years(INTERMEDIATE_YEARS))?;
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    append_key_identifiers(&mut b, Some(&root.cert))?;
    b.sign(&root.key, MessageDigest::sha256())?;
    Ok(KeyedCert {
        cert: b.build(),
        key,
    })
}

fn new_key() -> Result<PKey<Private>, ErrorStack> {
    PKey::from_rsa(Rsa::generate(KEY_BITS)?)
}

fn name(entries: &[(Nid, &str)]) -> Result<X509Name, ErrorStack> {
    let mut b = X509NameBuilder::new()?;
    for (nid, value) in entries {
        b.append_entry_by_nid(*nid, value)?;
    }
    Ok(b.build())
}

/// A version 3 certificate builder with a fresh random serial and the given names and key.
fn builder<T: openssl::pkey::HasPublic>(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    key: &PKeyRef<T>,
) -> Result<X509Builder, ErrorStack> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = BigNum::from_slice(&ids::serial()?)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    b.set_pubkey(key)?;
    Ok(b)
}

fn set_validity(
    b: &mut X509Builder,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(), ErrorStack> {
    let not_before = asn1_time(not_before)?;
    let not_after = asn1_time(not_after)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)
}

fn asn1_time(t: OffsetDateTime) -> Result<Asn1Time, ErrorStack> {
    // time_t is 64-bit on every platform this builds for; the cast cannot truncate there.
    Asn1Time::from_unix(t.unix_timestamp() as _)
}

/// subjectKeyIdentifier, and authorityKeyIdentifier pointing at `issuer` (none for a root).
fn append_key_identifiers(b: &mut X509Builder, issuer: Option<&X509Ref>) -> Result<(), ErrorStack> {
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer, None))?;
    b.append_extension(ski)?;
    if let Some(issuer) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(issuer), None))?;
        b.append_extension(aki)?;
    }
    Ok(())
}

fn years(n: i64) -> time::Duration {
    time::Duration::days(365 * n)
}

fn pem(cert: &X509Ref) -> Result<String, ErrorStack> {
    let bytes = cert.to_pem()?;
    // OpenSSL's PEM writer emits only base64 and ASCII armour lines.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509Req;

    #[test]
    fn chain_and_leaf() {
        let ca = Authority::generate().unwrap();
        let root = X509::from_pem(ca.root_pem().as_bytes()).unwrap();
        let inter = X509::from_pem(ca.intermediate_pem().as_bytes()).unwrap();
        assert!(root.verify(&root.public_key().unwrap()).unwrap());
        assert!(inter.verify(&root.public_key().unwrap()).unwrap());
        assert_eq!(
            root.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .next()
                .unwrap()
                .data()
                .to_string()
                .unwrap(),
            ROOT_CN
        );

        let csr =
            X509Req::from_pem(include_bytes!("../data/sample-request.csr").as_slice()).unwrap();
        let start = time::macros::datetime!(2025-06-10 11:08:39 UTC);
        let leaf = ca
            .issue_leaf(
                Signer::Intermediate,
                csr.subject_name(),
                &csr.public_key().unwrap(),
                "0717_abc",
                start,
                time::Duration::seconds(3600),
            )
            .unwrap();
        assert_eq!(leaf.not_after, start + time::Duration::seconds(3600));
        let cert = X509::from_pem(leaf.pem.as_bytes()).unwrap();
        assert!(cert.verify(&inter.public_key().unwrap()).unwrap());
        assert_eq!(cert.serial_number().to_bn().unwrap().num_bytes(), 16);
        let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
        assert!(text.contains("Version: 3"), "{text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(
            text.contains("Digital Signature, Key Encipherment"),
            "{text}"
        );
        assert!(text.contains("TLS Web Client Authentication"), "{text}");
        assert!(text.contains("sha256WithRSAEncryption"), "{text}");
        let forged = ca
            .issue_leaf(
                Signer::Stranger,
                csr.subject_name(),
                &csr.public_key().unwrap(),
                "0717_abc",
                start,
                time::Duration::seconds(3600),
            )
            .unwrap();
        let forged = X509::from_pem(forged.pem.as_bytes()).unwrap();
        assert_eq!(
            forged.issuer_name().to_der().unwrap(),
            inter.subject_name().to_der().unwrap()
        );
        assert!(!forged.verify(&inter.public_key().unwrap()).unwrap());
        assert!(forged.verify(ca.stranger().unwrap()).unwrap());
        assert!(
            text.contains(
                "C=US, ST=Minnesota, L=Rochester, O=Internet Widgits Pty Ltd, CN=0717_abc"
            ),
            "{text}"
        );
        assert!(
            text.contains("Not Before: Jun 10 11:08:39 2025 GMT"),
            "{text}"
        );
        assert!(
            text.contains("Not After : Jun 10 12:08:39 2025 GMT"),
            "{text}"
        );
    }
}
