//! Certificate signing requests: reading one from PEM, describing it ([`CsrView`]) and the
//! rules the service applies before it signs (RSA >= 2048 bits, subject limited to
//! C/ST/L/O/OU, no extensions, a valid self-signature).

use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::x509::{X509Req, X509ReqRef};
use serde::{Deserialize, Serialize};

/// The smallest RSA modulus the service signs.
pub(crate) const MIN_KEY_BITS: u32 = 2048;

/// The subject attributes a CSR may carry; the service adds CN itself.
const ALLOWED_SUBJECT: &[Nid] = &[
    Nid::COUNTRYNAME,
    Nid::STATEORPROVINCENAME,
    Nid::LOCALITYNAME,
    Nid::ORGANIZATIONNAME,
    Nid::ORGANIZATIONALUNITNAME,
];

/// What the emulator noted about a CSR, recorded in the request log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsrView {
    /// Subject attributes in order, by short name (`C`, `ST`, `L`, `O`, `OU`, `CN`, ...);
    /// attributes OpenSSL has no name for appear as their dotted OID.
    pub subject: Vec<(String, String)>,
    /// Requested extensions; an extension request OpenSSL cannot read counts as one.
    pub extension_count: usize,
    /// Size of the public key in bits.
    pub key_bits: u32,
}

/// Why a CSR is refused. `code` and the `Display` text become the IBM error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CsrRejection {
    #[error("The csr is not a PEM certificate signing request (expected a block starting with -----BEGIN CERTIFICATE REQUEST-----): {0}")]
    Unreadable(String),
    #[error("The csr signature does not verify with the CSR's own public key; generate the CSR again with its private key.")]
    BadSignature,
    #[error("The csr must use an RSA key; this one uses {0}. Generate it with e.g. `openssl req -newkey rsa:2048`.")]
    NotRsa(String),
    #[error("The csr key has {0} bits; RSA keys must have at least {MIN_KEY_BITS} bits.")]
    KeyTooSmall(u32),
    #[error("The csr subject must not contain a common name (CN): the service sets CN to the instance ID itself. Use only C, ST, L, O and OU.")]
    CommonName,
    #[error("The csr subject contains {0}, which is not allowed; use only C, ST, L, O and OU.")]
    SubjectAttribute(String),
    #[error("The csr requests {0} extension(s); CSRs with extensions are not allowed. Remove the extension request (e.g. drop -addext / req_extensions).")]
    Extensions(usize),
}

impl CsrRejection {
    pub fn code(&self) -> &'static str {
        match self {
            CsrRejection::Unreadable(_) | CsrRejection::BadSignature | CsrRejection::NotRsa(_) => {
                "invalid_csr"
            }
            CsrRejection::KeyTooSmall(_) => "csr_key_too_small",
            CsrRejection::CommonName => "csr_common_name_not_allowed",
            CsrRejection::SubjectAttribute(_) => "csr_subject_not_allowed",
            CsrRejection::Extensions(_) => "csr_extensions_not_allowed",
        }
    }
}

/// A CSR that could be read, with its view; [`ParsedCsr::validate`] says whether it may be signed.
pub(crate) struct ParsedCsr {
    req: X509Req,
    view: CsrView,
}

impl ParsedCsr {
    pub fn parse(pem: &str) -> Result<Self, CsrRejection> {
        let req = X509Req::from_pem(pem.trim().as_bytes())
            .map_err(|e| CsrRejection::Unreadable(first_reason(&e)))?;
        let key_bits = req
            .public_key()
            .map_err(|e| CsrRejection::Unreadable(first_reason(&e)))?
            .bits();
        let view = CsrView {
            subject: subject_pairs(&req),
            extension_count: extension_count(&req),
            key_bits,
        };
        Ok(ParsedCsr { req, view })
    }

    pub fn view(&self) -> &CsrView {
        &self.view
    }

    pub fn request(&self) -> &X509ReqRef {
        &self.req
    }

    /// Applies the service's rules, the cheapest and most fundamental first.
    pub fn validate(&self) -> Result<(), CsrRejection> {
        let key = self
            .req
            .public_key()
            .map_err(|e| CsrRejection::Unreadable(first_reason(&e)))?;
        if !self.req.verify(&key).unwrap_or(false) {
            return Err(CsrRejection::BadSignature);
        }
        if key.id() != Id::RSA {
            return Err(CsrRejection::NotRsa(key_type_name(key.id())));
        }
        if self.view.key_bits < MIN_KEY_BITS {
            return Err(CsrRejection::KeyTooSmall(self.view.key_bits));
        }
        for entry in self.req.subject_name().entries() {
            let nid = entry.object().nid();
            if nid == Nid::COMMONNAME {
                return Err(CsrRejection::CommonName);
            }
            if !ALLOWED_SUBJECT.contains(&nid) {
                return Err(CsrRejection::SubjectAttribute(attribute_name(
                    entry.object(),
                )));
            }
        }
        if self.view.extension_count > 0 {
            return Err(CsrRejection::Extensions(self.view.extension_count));
        }
        Ok(())
    }
}

fn subject_pairs(req: &X509ReqRef) -> Vec<(String, String)> {
    req.subject_name()
        .entries()
        .map(|entry| {
            let value = entry
                .data()
                .to_string()
                .unwrap_or_else(|_| String::from_utf8_lossy(entry.data().as_slice()).into_owned());
            (attribute_name(entry.object()), value)
        })
        .collect()
}

fn attribute_name(object: &openssl::asn1::Asn1ObjectRef) -> String {
    match object.nid().short_name() {
        Ok(name) if object.nid() != Nid::UNDEF => name.to_string(),
        _ => object.to_string(),
    }
}

/// OpenSSL 3 answers "no extension request" with an empty list and fails only on an
/// extension request it cannot decode; OpenSSL 1.1 also fails when there is none. An
/// undecodable request is still a request for extensions, so on 3.x it counts as one.
fn extension_count(req: &X509ReqRef) -> usize {
    match req.extensions() {
        Ok(extensions) => extensions.len(),
        Err(_) if openssl::version::number() < 0x3000_0000 => 0,
        Err(_) => 1,
    }
}

fn key_type_name(id: Id) -> String {
    match id {
        Id::EC => "an EC key".to_string(),
        Id::ED25519 => "an Ed25519 key".to_string(),
        Id::ED448 => "an Ed448 key".to_string(),
        Id::DSA => "a DSA key".to_string(),
        other => format!("key type {}", other.as_raw()),
    }
}

/// OpenSSL's error stacks are long; the first reason is what a user can act on.
fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|err| err.reason().map(str::to_string))
        .unwrap_or_else(|| "no PEM data found".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../data/sample-request.csr");

    #[test]
    fn documented_sample_is_valid() {
        let csr = ParsedCsr::parse(SAMPLE).unwrap();
        assert_eq!(
            csr.view(),
            &CsrView {
                subject: vec![
                    ("C".into(), "US".into()),
                    ("ST".into(), "Minnesota".into()),
                    ("L".into(), "Rochester".into()),
                    ("O".into(), "Internet Widgits Pty Ltd".into()),
                ],
                extension_count: 0,
                key_bits: 2048,
            }
        );
        assert_eq!(csr.validate(), Ok(()));
    }

    #[test]
    fn garbage_is_unreadable() {
        let err = ParsedCsr::parse("hello").err().unwrap();
        assert_eq!(err.code(), "invalid_csr");
        assert!(err.to_string().contains("BEGIN CERTIFICATE REQUEST"));
    }

    #[test]
    fn tampered_signature_is_refused() {
        // Flip one bit inside the signature (the last base64 line before the footer).
        let tampered = SAMPLE.replace("TQ==", "TA==");
        let csr = ParsedCsr::parse(&tampered).unwrap();
        assert_eq!(csr.validate(), Err(CsrRejection::BadSignature));
    }
}
