//! The certificate signing request the service accepts: a subject of C/ST/L/O/OU only, no CN
//! (the service writes the instance ID there), no extensions, SHA-256 signature.

use openssl::hash::MessageDigest;
use openssl::x509::{X509NameBuilder, X509ReqBuilder};

use crate::config::Subject;
use crate::pki::PrivateKey;

#[derive(Debug, thiserror::Error)]
#[error("cannot build the certificate signing request: {0}")]
pub struct CsrError(openssl::error::ErrorStack);

impl From<openssl::error::ErrorStack> for CsrError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        CsrError(e)
    }
}

/// Builds and signs a CSR for `key`, returned as PEM text (what the API's `csr` field takes).
pub fn build(key: &PrivateKey, subject: &Subject) -> Result<String, CsrError> {
    let mut name = X509NameBuilder::new()?;
    for (attr, value) in subject.entries() {
        name.append_entry_by_text(attr.short_name(), value)?;
    }
    let name = name.build();
    let mut req = X509ReqBuilder::new()?;
    req.set_version(0)?;
    req.set_subject_name(&name)?;
    req.set_pubkey(key.pkey())?;
    req.sign(key.pkey(), MessageDigest::sha256())?;
    let pem = req.build().to_pem()?;
    // PEM from OpenSSL is ASCII by construction.
    Ok(String::from_utf8_lossy(&pem).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509Req;

    #[test]
    fn csr_has_configured_subject_no_cn_and_no_extensions() {
        let key = PrivateKey::generate(2048).unwrap();
        let subject: Subject =
            toml::from_str::<toml::Table>("s = { C = \"DE\", O = \"Acme\", OU = \"Ops\" }")
                .unwrap()["s"]
                .clone()
                .try_into()
                .unwrap();
        let pem = build(&key, &subject).unwrap();
        let req = X509Req::from_pem(pem.as_bytes()).unwrap();
        let pubkey = req.public_key().unwrap();
        assert!(req.verify(&pubkey).unwrap(), "CSR signature must verify");
        assert_eq!(
            pubkey.public_key_to_der().unwrap(),
            key.public_key_der().unwrap()
        );
        let entries: Vec<(String, String)> = req
            .subject_name()
            .entries()
            .map(|e| {
                (
                    e.object().nid().short_name().unwrap().to_string(),
                    e.data().to_string().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("C".into(), "DE".into()),
                ("O".into(), "Acme".into()),
                ("OU".into(), "Ops".into())
            ]
        );
        // No attributes at all: an extension request would be one.
        use x509_parser::prelude::FromDer;
        let der = req.to_der().unwrap();
        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        assert_eq!(parsed.certification_request_info.attributes().len(), 0);
        assert!(parsed.requested_extensions().is_none());
    }
}
