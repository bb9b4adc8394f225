//! Whether one certificate issued another. The issuer name (compared as OpenSSL compares names)
//! and the key identifiers (when both certificates carry them) only pick the candidates; the
//! signature alone decides. Names are never enough: CAs share them (eleven of IBM's regional
//! roots are all `CN=eit-root-ca`, each with its own key).

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

/// A distinguished name in the form OpenSSL's `X509_NAME_cmp` compares: per attribute, its type
/// and its value with ASCII case folded, leading and trailing white space removed and inner runs
/// of white space collapsed to one space. Values that are not strings compare by their bytes.
/// (IBM's Montreal intermediate is `CN=IBM Cloud ` under the root `CN=IBM Cloud`.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalName(Vec<Vec<(String, Vec<u8>)>>);

impl CanonicalName {
    pub fn of(name: &X509Name<'_>) -> CanonicalName {
        CanonicalName(
            name.iter_rdn()
                .map(|rdn| {
                    let mut set: Vec<(String, Vec<u8>)> = rdn
                        .iter()
                        .map(|atv| {
                            let value = match atv.as_str() {
                                Ok(s) => fold(s).into_bytes(),
                                Err(_) => atv.as_slice().to_vec(),
                            };
                            (atv.attr_type().to_id_string(), value)
                        })
                        .collect();
                    // A multi-valued RDN is a SET: its order carries no meaning.
                    set.sort();
                    set
                })
                .collect(),
        )
    }
}

fn fold(s: &str) -> String {
    s.split(|c: char| c.is_ascii_whitespace() || c == '\x0b')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// The subjectKeyIdentifier, if present.
pub fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        })
}

/// The keyIdentifier of the authorityKeyIdentifier, if present.
pub fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })
}

/// `child`'s authority key identifier does not contradict `issuer_ski` (either may be absent).
pub fn key_ids_fit(child: &X509Certificate<'_>, issuer_ski: Option<&[u8]>) -> bool {
    match (authority_key_id(child), issuer_ski) {
        (Some(aki), Some(ski)) => aki == ski,
        _ => true,
    }
}

/// `issuer` is a candidate for having signed `child`: its subject is `child`'s issuer and the key
/// identifiers fit. Cheap; says nothing until [`signed_by`] confirms it.
pub fn may_have_issued(issuer: &X509Certificate<'_>, child: &X509Certificate<'_>) -> bool {
    CanonicalName::of(child.issuer()) == CanonicalName::of(issuer.subject())
        && key_ids_fit(child, subject_key_id(issuer))
}

/// `child`'s signature verifies with `issuer`'s public key.
pub fn signed_by(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    child.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Subject and issuer are the same name (RFC 5280's "self-issued"; such a CA does not count
/// against a pathLenConstraint above it).
pub fn is_self_issued(cert: &X509Certificate<'_>) -> bool {
    CanonicalName::of(cert.subject()) == CanonicalName::of(cert.issuer())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    fn name_der(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = openssl::x509::X509Name::builder().unwrap();
        for (k, v) in entries {
            b.append_entry_by_text(k, v).unwrap();
        }
        b.build().to_der().unwrap()
    }

    fn canonical(entries: &[(&str, &str)]) -> CanonicalName {
        let der = name_der(entries);
        let (_, n) = X509Name::from_der(&der).unwrap();
        CanonicalName::of(&n)
    }

    #[test]
    fn names_compare_as_openssl_compares_them() {
        assert_eq!(
            canonical(&[("CN", "IBM Cloud")]),
            canonical(&[("CN", "IBM Cloud ")])
        );
        assert_eq!(
            canonical(&[("CN", " eit-root-ca")]),
            canonical(&[("CN", "EIT-root-CA")])
        );
        assert_eq!(canonical(&[("CN", "a  b")]), canonical(&[("CN", "a b")]));
        assert_ne!(canonical(&[("CN", "ab")]), canonical(&[("CN", "a b")]));
        assert_ne!(canonical(&[("CN", "x")]), canonical(&[("O", "x")]));
        assert_ne!(
            canonical(&[("O", "a"), ("CN", "b")]),
            canonical(&[("CN", "b"), ("O", "a")])
        );
    }
}
