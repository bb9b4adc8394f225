//! Which signature algorithms and public keys a certificate may use: at least what OpenSSL's
//! security level 2 demands (the default of current distributions, and `openssl verify
//! -auth_level 2`): no MD5 or SHA-1 signatures, RSA keys of 2048 bits or more.
//!
//! On top of that, only what the signature verifier can check is accepted (RSA up to 8192 bits
//! with SHA-256/384/512 or PSS, ECDSA on P-256/P-384 with SHA-256/384, Ed25519): an algorithm
//! we cannot verify is refused as unsupported rather than as a bad signature.

use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The smallest RSA modulus accepted, in bits (security level 2: 112-bit security).
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus the signature verifier handles.
pub const MAX_RSA_BITS: usize = 8192;

/// Why a signature algorithm is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// A broken digest: collisions can be made, so a signature proves nothing.
    Weak {
        digest: &'static str,
        algorithm: String,
    },
    Unsupported {
        algorithm: String,
    },
}

/// Why a public key is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    TooSmall { bits: usize },
    Unsupported { what: String },
}

const RSA: &str = "1.2.840.113549.1.1.1";
const EC: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const PSS: &str = "1.2.840.113549.1.1.10";

/// Checks the algorithm `cert` is signed with.
pub fn check_signature_algorithm(cert: &X509Certificate<'_>) -> Result<(), SignatureProblem> {
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    let weak = |digest, name: &str| {
        Err(SignatureProblem::Weak {
            digest,
            algorithm: name.to_string(),
        })
    };
    let unsupported = |name: &str| {
        Err(SignatureProblem::Unsupported {
            algorithm: name.to_string(),
        })
    };
    match oid.as_str() {
        "1.2.840.113549.1.1.11" | "1.2.840.113549.1.1.12" | "1.2.840.113549.1.1.13" => Ok(()),
        "1.2.840.10045.4.3.2" | "1.2.840.10045.4.3.3" | ED25519 => Ok(()),
        "1.2.840.113549.1.1.2" => weak("MD2", "md2WithRSAEncryption"),
        "1.2.840.113549.1.1.3" => weak("MD4", "md4WithRSAEncryption"),
        "1.2.840.113549.1.1.4" | "1.3.14.3.2.25" => weak("MD5", "md5WithRSAEncryption"),
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => weak("SHA-1", "sha1WithRSAEncryption"),
        "1.2.840.10045.4.1" => weak("SHA-1", "ecdsa-with-SHA1"),
        "1.2.840.10040.4.3" => weak("SHA-1", "dsa-with-sha1"),
        "1.2.840.113549.1.1.14" => unsupported("sha224WithRSAEncryption"),
        "1.2.840.10045.4.3.1" => unsupported("ecdsa-with-SHA224"),
        "1.2.840.10045.4.3.4" => unsupported("ecdsa-with-SHA512"),
        PSS => {
            let hash = cert
                .signature_algorithm
                .parameters
                .as_ref()
                .and_then(|p| RsaSsaPssParams::try_from(p).ok())
                .map(|p| p.hash_algorithm_oid().to_id_string());
            match hash.as_deref() {
                // RSASSA-PSS without parameters means SHA-1 (RFC 4055).
                None | Some("1.3.14.3.2.26") => weak("SHA-1", "RSASSA-PSS with SHA-1"),
                Some("2.16.840.1.101.3.4.2.1")
                | Some("2.16.840.1.101.3.4.2.2")
                | Some("2.16.840.1.101.3.4.2.3") => Ok(()),
                Some(other) => unsupported(&format!("RSASSA-PSS with digest {other}")),
            }
        }
        other => unsupported(other),
    }
}

/// Checks a public key; on success returns how to describe it ("RSA 2048 bits", "EC P-256").
pub fn check_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<String, KeyProblem> {
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        RSA => {
            let bits = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
                _ => {
                    return Err(KeyProblem::Unsupported {
                        what: "an unreadable RSA key".into(),
                    })
                }
            };
            if bits < MIN_RSA_BITS {
                Err(KeyProblem::TooSmall { bits })
            } else if bits > MAX_RSA_BITS {
                Err(KeyProblem::Unsupported {
                    what: format!(
                        "an RSA key of {bits} bits (at most {MAX_RSA_BITS} are verified)"
                    ),
                })
            } else {
                Ok(format!("RSA {bits} bits"))
            }
        }
        EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(P256) => Ok("EC P-256".into()),
                Some(P384) => Ok("EC P-384".into()),
                Some(other) => Err(KeyProblem::Unsupported {
                    what: format!("an EC key on curve {other} (P-256 and P-384 are verified)"),
                }),
                None => Err(KeyProblem::Unsupported {
                    what: "an EC key without a named curve".into(),
                }),
            }
        }
        ED25519 => Ok("Ed25519".into()),
        other => Err(KeyProblem::Unsupported {
            what: format!("a key of type {other}"),
        }),
    }
}

/// Bits of an unsigned big-endian integer (a DER INTEGER may carry leading zero bytes).
fn modulus_bits(bytes: &[u8]) -> usize {
    let digits = match bytes.iter().position(|&b| b != 0) {
        Some(start) => &bytes[start..],
        None => return 0,
    };
    (digits.len() - 1) * 8 + (8 - digits[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignore_leading_zeros() {
        assert_eq!(modulus_bits(&[0, 0x80, 0, 0]), 24);
        assert_eq!(modulus_bits(&[0x7f, 0]), 15);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[]), 0);
    }
}
