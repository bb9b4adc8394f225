//! Decides whether a `certificates` array from the service may be installed.
//!
//! Pure: PEM strings, our public key, the trust anchors and "now" in; a [`Verified`] set or the
//! one [`Rejection`] that explains what is wrong out. Nothing here reads a clock or a file, so
//! every rule is unit-tested with fixed times.
//!
//! The rules, in the order they are checked (the first failure is reported):
//! 1. at most [`MAX_CERTIFICATES`] elements, at least a leaf and one intermediate, each exactly
//!    one parseable PEM certificate;
//! 2. every certificate is inside its validity window (notBefore may be up to `skew` ahead);
//! 3. every certificate is signed with an accepted algorithm (no MD5, no SHA-1) and carries an
//!    accepted key (RSA of 2048 bits or more), see [`super::policy`];
//! 4. the set forms one chain: each link is signed by the next, found by issuer name and key
//!    identifier and proven by the signature (see [`super::link`]);
//! 5. every certificate above the leaf is a CA (basicConstraints cA), may sign certificates
//!    (keyUsage, when present, has keyCertSign) and has no more CAs below it than its
//!    pathLenConstraint allows;
//! 6. the leaf's public key is ours;
//! 7. with trust anchors, the top of the chain is an anchor or is signed by one; that anchor is
//!    held to rules 2, 3 (its key; its own self-signature is not checked, as in OpenSSL) and 5.
//!
//! This is at least as strict as `openssl verify -auth_level 2` (a TLS peer at OpenSSL's
//! default security level), which a differential test checks. What `-x509_strict` adds is not
//! demanded of the leaf: IBM's documented leaf is an X.509 v1 certificate without extensions.
//!
//! Work is bounded: at most [`MAX_CERTIFICATES`] are considered (the service sends two), so a
//! hostile response costs a count, not a search. Chain building tries, per link, only the
//! certificates whose name and key identifier fit: at most n² signature checks.
//!
//! The service documents `[leaf, intermediate…]`. A set sent in another order is accepted when
//! it still forms exactly one chain from a leaf that carries our key: the signatures prove the
//! order, and we always install it leaf-first. [`Verified::reordered`] tells the caller to warn.

use crate::text::{hex_lower, hex_upper, rfc3339};
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use super::anchors::{list, Anchor, AnchorRef, TrustAnchors};
use super::link::{self, CanonicalName};
use super::policy::{self, KeyProblem, SignatureProblem};

/// Clock skew tolerated on notBefore: a certificate issued "now" by a host whose clock is a
/// little ahead of ours is still accepted.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(300);

/// The most certificates a response may hold. The service sends two (leaf, intermediate);
/// more than a handful can only be a mistake or an attack, and refusing them by count keeps a
/// hostile 1 MiB response from costing more than the count.
pub const MAX_CERTIFICATES: usize = 16;

/// Facts about a leaf certificate, taken from the certificate itself (never from the JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Upper-case hex, as `openssl x509 -serial` prints it.
    pub serial_hex: String,
    /// Lower-case hex SHA-256 of the leaf's DER.
    pub fingerprint_sha256: String,
    pub subject: String,
    pub issuer: String,
    /// The certificate's SubjectPublicKeyInfo, DER.
    pub public_key_der: Vec<u8>,
}

impl LeafInfo {
    fn from_cert(cert: &X509Certificate<'_>, der: &[u8]) -> LeafInfo {
        LeafInfo {
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            serial_hex: hex_upper(trim_sign_byte(cert.tbs_certificate.raw_serial())),
            fingerprint_sha256: hex_lower(&openssl::sha::sha256(der)),
            subject: name(cert.subject()),
            issuer: name(cert.issuer()),
            public_key_der: cert.public_key().raw.to_vec(),
        }
    }

    /// Reads the first certificate of a PEM file (an installed `cert.pem`).
    pub fn from_pem(pem: &[u8]) -> Result<LeafInfo, String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|e| format!("no PEM certificate found ({e})"))?;
        let (_, cert) = X509Certificate::from_der(&pem.contents).map_err(|e| e.to_string())?;
        Ok(LeafInfo::from_cert(&cert, &pem.contents))
    }

    pub fn lifetime(&self) -> Duration {
        (self.not_after - self.not_before)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }

    /// Time left at `now`; zero once expired.
    pub fn remaining(&self, now: OffsetDateTime) -> Duration {
        (self.not_after - now).try_into().unwrap_or(Duration::ZERO)
    }
}

/// A CA certificate above the leaf, for expiry warnings (a CA rotation is the one failure a
/// fresh leaf cannot fix).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaInfo {
    /// Its subject, on one line.
    pub subject: String,
    /// Lower-case hex SHA-256 of its DER.
    pub fingerprint_sha256: String,
    /// When it expires; no leaf it signs can be used after that.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// For a trust anchor, the file it was read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

impl CaInfo {
    pub fn of(cert: &X509Certificate<'_>) -> CaInfo {
        CaInfo {
            subject: name(cert.subject()),
            fingerprint_sha256: hex_lower(&openssl::sha::sha256(cert.as_raw())),
            not_after: cert.validity().not_after.to_datetime(),
            source: None,
        }
    }

    pub fn of_anchor(anchor: &Anchor) -> CaInfo {
        CaInfo {
            subject: anchor.subject.clone(),
            fingerprint_sha256: anchor.fingerprint_sha256.clone(),
            not_after: anchor.not_after,
            source: Some(anchor.source.clone()),
        }
    }
}

/// A certificate set that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Leaf first, then intermediates toward the root, each as DER.
    pub chain_der: Vec<Vec<u8>>,
    pub leaf: LeafInfo,
    /// The service sent the set in another order than `[leaf, intermediate…]`.
    pub reordered: bool,
    /// Of the CA certificates the service sent (a configured anchor among them excluded), the
    /// one that expires first.
    pub intermediate: CaInfo,
    /// The configured trust anchor the chain ends at; `None` when none is configured.
    pub anchor: Option<CaInfo>,
}

impl Verified {
    pub fn leaf_pem(&self) -> String {
        super::pem_encode("CERTIFICATE", &self.chain_der[0])
    }

    /// Intermediates only, leaf excluded.
    pub fn chain_pem(&self) -> String {
        self.chain_der[1..]
            .iter()
            .map(|d| super::pem_encode("CERTIFICATE", d))
            .collect()
    }
}

/// Which certificate a rule failed on: an element of the service's `certificates` array, or a
/// configured trust anchor (named by fingerprint and file: anchors often share a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Cert(usize),
    Anchor(Box<AnchorRef>),
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Cert(i) => write!(f, "certificates[{i}]"),
            Who::Anchor(a) => write!(f, "the trust anchor {a}"),
        }
    }
}

/// Why a certificate set was refused. Each variant reads as a sentence naming the element
/// (`certificates[i]`, as in the service's JSON, or the trust anchor) and the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the service returned no certificates")]
    Empty,
    #[error(
        "the service returned {count} certificates; at most {MAX_CERTIFICATES} are examined \
         (it sends a leaf and its intermediate)"
    )]
    TooManyCertificates { count: usize },
    #[error(
        "the service returned a leaf certificate without the intermediate that signed it; \
         a TLS server could not verify it"
    )]
    NoIntermediate,
    #[error(
        "certificates[{index}] is not a PEM certificate (no -----BEGIN CERTIFICATE----- block)"
    )]
    NotPem { index: usize },
    #[error("certificates[{index}] holds something besides one PEM certificate ({what})")]
    ExtraData { index: usize, what: String },
    #[error("certificates[{index}] is PEM armour around data that is not an X.509 certificate: {reason}")]
    BadDer { index: usize, reason: String },
    #[error("{who} ({subject}) expired at {not_after} (now {now})")]
    Expired {
        who: Who,
        subject: String,
        not_after: String,
        now: String,
    },
    #[error(
        "{who} ({subject}) is not valid before {not_before} (now {now}); check this host's clock"
    )]
    NotYetValid {
        who: Who,
        subject: String,
        not_before: String,
        now: String,
    },
    #[error(
        "{who} ({subject}) is signed with {algorithm}: {digest} signatures are refused \
         (collisions can be forged)"
    )]
    WeakSignature {
        who: Who,
        subject: String,
        digest: &'static str,
        algorithm: String,
    },
    #[error(
        "{who} ({subject}) is signed with {algorithm}, an algorithm eit-certd does not accept"
    )]
    UnsupportedSignature {
        who: Who,
        subject: String,
        algorithm: String,
    },
    #[error(
        "{who} ({subject}) has an RSA key of {bits} bits; at least {} are required \
         (OpenSSL security level 2)",
        policy::MIN_RSA_BITS
    )]
    WeakKey {
        who: Who,
        subject: String,
        bits: usize,
    },
    #[error("{who} ({subject}) has {what}, which eit-certd does not accept")]
    UnsupportedKey {
        who: Who,
        subject: String,
        what: String,
    },
    #[error(
        "the certificates do not form one chain: {subject} (certificates[{index}]) names \
         {issuer} as its issuer, and no other certificate in the response has that name and key \
         identifier"
    )]
    BrokenChain {
        index: usize,
        subject: String,
        issuer: String,
    },
    #[error(
        "the certificates do not form one chain: certificates[{index}] is not part of it \
         ({subject})"
    )]
    StrayCertificate { index: usize, subject: String },
    #[error("certificates[{index}] ({subject}) is not signed by certificates[{issuer_index}] ({issuer}), whose name it gives as issuer")]
    BadSignature {
        index: usize,
        subject: String,
        issuer_index: usize,
        issuer: String,
    },
    #[error("{who} ({subject}) signs another certificate but is not a CA (basicConstraints cA is not set)")]
    NotCa { who: Who, subject: String },
    #[error(
        "{who} ({subject}) signs another certificate but its keyUsage does not include \
         keyCertSign"
    )]
    NoKeyCertSign { who: Who, subject: String },
    #[error(
        "{who} ({subject}) has pathLenConstraint {max}: it allows {max} CA certificate(s) below \
         it, the chain has {below}"
    )]
    PathLength {
        who: Who,
        subject: String,
        max: u32,
        below: usize,
    },
    #[error(
        "the leaf certificate is for a different public key than the one in our CSR; \
         refusing a certificate we hold no key for"
    )]
    KeyMismatch,
    #[error(
        "the chain does not end at a configured trust anchor: {who} ({subject}) names {issuer} \
         as its issuer, and {}", no_anchor_detail(candidates, ignored, *loaded)
    )]
    UntrustedAnchor {
        who: Who,
        subject: String,
        issuer: String,
        /// Configured anchors with that name: none of them signed it.
        candidates: Vec<AnchorRef>,
        /// Anchors with that name ignored at load (expired).
        ignored: Vec<AnchorRef>,
        /// How many anchors are configured.
        loaded: usize,
    },
}

fn no_anchor_detail(candidates: &[AnchorRef], ignored: &[AnchorRef], loaded: usize) -> String {
    let mut s = match candidates.len() {
        0 => format!("none of the {loaded} configured trust anchors has that name"),
        1 => format!(
            "the one configured trust anchor with that name did not sign it: {}",
            list(candidates)
        ),
        n => format!(
            "none of the {n} configured trust anchors with that name signed it: {}",
            list(candidates)
        ),
    };
    if !ignored.is_empty() {
        s.push_str(&format!("; ignored at load: {}", list(ignored)));
    }
    s
}

/// Applies the rules in the module doc to `certificates` (the JSON array, verbatim).
pub fn validate(
    certificates: &[String],
    our_public_key_der: &[u8],
    anchors: Option<&TrustAnchors>,
    now: OffsetDateTime,
    skew: Duration,
) -> Result<Verified, Rejection> {
    if certificates.is_empty() {
        return Err(Rejection::Empty);
    }
    if certificates.len() > MAX_CERTIFICATES {
        return Err(Rejection::TooManyCertificates {
            count: certificates.len(),
        });
    }
    let pems = certificates
        .iter()
        .enumerate()
        .map(|(index, text)| parse_one_pem(index, text))
        .collect::<Result<Vec<Pem>, Rejection>>()?;
    let certs = pems
        .iter()
        .enumerate()
        .map(|(index, pem)| {
            X509Certificate::from_der(&pem.contents)
                .map(|(_, c)| c)
                .map_err(|e| Rejection::BadDer {
                    index,
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    if certs.len() < 2 {
        return Err(Rejection::NoIntermediate);
    }

    for (index, cert) in certs.iter().enumerate() {
        check_window(&Who::Cert(index), cert, now, skew)?;
    }
    for (index, cert) in certs.iter().enumerate() {
        // A configured anchor's own self-signature is not what makes it trusted.
        let is_anchor = anchors.is_some_and(|a| a.find_der(cert.as_raw()).is_some());
        if !is_anchor {
            check_signature_algorithm(&Who::Cert(index), cert)?;
        }
        check_key(&Who::Cert(index), cert)?;
    }

    let order = chain_order(&certs, our_public_key_der)?;
    for position in 1..order.len() {
        let below = cas_below(&certs, &order, position);
        check_ca(&Who::Cert(order[position]), &certs[order[position]], below)?;
    }

    let leaf = &certs[order[0]];
    if leaf.public_key().raw != our_public_key_der {
        return Err(Rejection::KeyMismatch);
    }

    let top = *order.last().expect("len >= 2");
    let (anchor, anchor_is_top) = match anchors {
        None => (None, false),
        Some(anchors) => {
            let (anchor, is_top) = check_anchor(
                anchors,
                top,
                &certs,
                cas_below(&certs, &order, order.len()),
                now,
                skew,
            )?;
            (Some(anchor), is_top)
        }
    };
    let intermediate = order[1..]
        .iter()
        .filter(|&&i| !(anchor_is_top && i == top))
        .map(|&i| &certs[i])
        .min_by_key(|c| c.validity().not_after.to_datetime())
        .unwrap_or(&certs[order[1]]);

    Ok(Verified {
        chain_der: order.iter().map(|&i| pems[i].contents.clone()).collect(),
        leaf: LeafInfo::from_cert(leaf, &pems[order[0]].contents),
        reordered: order.iter().enumerate().any(|(i, &j)| i != j),
        intermediate: CaInfo::of(intermediate),
        anchor,
    })
}

fn parse_one_pem(index: usize, text: &str) -> Result<Pem, Rejection> {
    let bytes = text.as_bytes();
    let start = text.find("-----BEGIN").ok_or(Rejection::NotPem { index })?;
    if !text[..start].trim().is_empty() {
        return Err(Rejection::ExtraData {
            index,
            what: "text before the PEM block".into(),
        });
    }
    let (rest, pem) =
        x509_parser::pem::parse_x509_pem(&bytes[start..]).map_err(|e| Rejection::BadDer {
            index,
            reason: format!("unreadable PEM ({e})"),
        })?;
    if pem.label != "CERTIFICATE" {
        return Err(Rejection::NotPem { index });
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejection::ExtraData {
            index,
            what: "more than one PEM block or trailing text".into(),
        });
    }
    Ok(pem)
}

fn check_window(
    who: &Who,
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
    skew: Duration,
) -> Result<(), Rejection> {
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    if now >= not_after {
        return Err(Rejection::Expired {
            who: who.clone(),
            subject: name(cert.subject()),
            not_after: rfc3339(not_after),
            now: rfc3339(now),
        });
    }
    if now + skew < not_before {
        return Err(Rejection::NotYetValid {
            who: who.clone(),
            subject: name(cert.subject()),
            not_before: rfc3339(not_before),
            now: rfc3339(now),
        });
    }
    Ok(())
}

fn check_signature_algorithm(who: &Who, cert: &X509Certificate<'_>) -> Result<(), Rejection> {
    policy::check_signature_algorithm(cert).map_err(|problem| match problem {
        SignatureProblem::Weak { digest, algorithm } => Rejection::WeakSignature {
            who: who.clone(),
            subject: name(cert.subject()),
            digest,
            algorithm,
        },
        SignatureProblem::Unsupported { algorithm } => Rejection::UnsupportedSignature {
            who: who.clone(),
            subject: name(cert.subject()),
            algorithm,
        },
    })
}

fn check_key(who: &Who, cert: &X509Certificate<'_>) -> Result<(), Rejection> {
    policy::check_key(cert.public_key())
        .map(|_| ())
        .map_err(|problem| match problem {
            KeyProblem::TooSmall { bits } => Rejection::WeakKey {
                who: who.clone(),
                subject: name(cert.subject()),
                bits,
            },
            KeyProblem::Unsupported { what } => Rejection::UnsupportedKey {
                who: who.clone(),
                subject: name(cert.subject()),
                what,
            },
        })
}

/// Indices of `certs` from leaf to the top of the chain. The leaf is `certs[0]` unless another
/// certificate carries our key and `certs[0]` does not; each next link is the unused
/// certificate whose name and key identifier fit the current one's issuer and whose key
/// verifies its signature. Every certificate must be used exactly once.
fn chain_order(certs: &[X509Certificate<'_>], our_key: &[u8]) -> Result<Vec<usize>, Rejection> {
    let first_is_ours = certs[0].public_key().raw == our_key;
    let leaf = if first_is_ours {
        0
    } else {
        certs
            .iter()
            .position(|c| c.public_key().raw == our_key && !is_ca(c))
            .unwrap_or(0)
    };
    let subjects: Vec<CanonicalName> = certs
        .iter()
        .map(|c| CanonicalName::of(c.subject()))
        .collect();
    let skis: Vec<Option<&[u8]>> = certs.iter().map(link::subject_key_id).collect();
    let mut used = vec![false; certs.len()];
    used[leaf] = true;
    let mut order = vec![leaf];
    while order.len() < certs.len() {
        let current = *order.last().expect("non-empty");
        let child = &certs[current];
        let issuer = CanonicalName::of(child.issuer());
        let candidates: Vec<usize> = (0..certs.len())
            .filter(|&i| !used[i] && subjects[i] == issuer && link::key_ids_fit(child, skis[i]))
            .collect();
        let Some(&first) = candidates.first() else {
            break;
        };
        match candidates
            .iter()
            .find(|&&i| link::signed_by(child, &certs[i]))
        {
            Some(&next) => {
                used[next] = true;
                order.push(next);
            }
            None => {
                return Err(Rejection::BadSignature {
                    index: current,
                    subject: name(child.subject()),
                    issuer_index: first,
                    issuer: name(certs[first].subject()),
                })
            }
        }
    }
    if order.len() < certs.len() {
        // Nothing in the response signed the top of what was built: that certificate breaks the
        // chain, unless it is a self-signed root, and then the first one left over is the stray.
        let top = *order.last().expect("non-empty");
        let stray = (0..certs.len()).find(|&i| !used[i]).expect("one is left");
        let top_is_root = order.len() > 1
            && link::is_self_issued(&certs[top])
            && link::signed_by(&certs[top], &certs[top]);
        return Err(if top_is_root {
            Rejection::StrayCertificate {
                index: stray,
                subject: name(certs[stray].subject()),
            }
        } else {
            Rejection::BrokenChain {
                index: top,
                subject: name(certs[top].subject()),
                issuer: name(certs[top].issuer()),
            }
        });
    }
    Ok(order)
}

/// CA certificates between the leaf and `order[position]` that count against a
/// pathLenConstraint there: all but the self-issued ones (RFC 5280 6.1.4 (l)).
fn cas_below(certs: &[X509Certificate<'_>], order: &[usize], position: usize) -> usize {
    order[1..position]
        .iter()
        .filter(|&&i| !link::is_self_issued(&certs[i]))
        .count()
}

/// A version 1 certificate has no basicConstraints; like OpenSSL, count a self-issued one as a
/// CA (old roots), any other as not.
fn is_ca(cert: &X509Certificate<'_>) -> bool {
    match cert.basic_constraints() {
        Ok(Some(bc)) => bc.value.ca,
        Ok(None) => cert.version().0 == 0 && link::is_self_issued(cert),
        Err(_) => false,
    }
}

/// Rule 5 for a certificate that signs another, with `below` CAs under it in the chain.
fn check_ca(who: &Who, cert: &X509Certificate<'_>, below: usize) -> Result<(), Rejection> {
    if !is_ca(cert) {
        return Err(Rejection::NotCa {
            who: who.clone(),
            subject: name(cert.subject()),
        });
    }
    let may_sign = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    if !may_sign {
        return Err(Rejection::NoKeyCertSign {
            who: who.clone(),
            subject: name(cert.subject()),
        });
    }
    if let Ok(Some(bc)) = cert.basic_constraints() {
        if let Some(max) = bc.value.path_len_constraint {
            if below > max as usize {
                return Err(Rejection::PathLength {
                    who: who.clone(),
                    subject: name(cert.subject()),
                    max,
                    below,
                });
            }
        }
    }
    Ok(())
}

/// Rule 7: finds the anchor for `certs[top]` and holds it to the rules; also says whether that
/// anchor is `certs[top]` itself. An anchor that signed `certs[top]` is preferred to
/// `certs[top]` being pinned itself (IBM's files hold intermediates too): the chain then ends
/// at the root, whose validity and expiry count. `below` counts the CAs under such a root.
fn check_anchor(
    anchors: &TrustAnchors,
    top: usize,
    certs: &[X509Certificate<'_>],
    below: usize,
    now: OffsetDateTime,
    skew: Duration,
) -> Result<(CaInfo, bool), Rejection> {
    let last = &certs[top];
    let candidates: Vec<&Anchor> = anchors
        .candidates(last)
        .into_iter()
        .filter(|a| a.der() != last.as_raw())
        .collect();
    let mut weak = None;
    for anchor in &candidates {
        let Some(cert) = anchor.parsed() else {
            continue;
        };
        let who = Who::Anchor(Box::new(anchor.reference(None)));
        if let Err(e) = check_key(&who, &cert) {
            weak = Some(e);
            continue;
        }
        if link::signed_by(last, &cert) {
            check_window(&who, &cert, now, skew)?;
            check_ca(&who, &cert, below)?;
            return Ok((CaInfo::of_anchor(anchor), false));
        }
    }
    if let Some(anchor) = anchors.find_der(last.as_raw()) {
        // Already held to every rule as part of the chain.
        return Ok((CaInfo::of_anchor(anchor), true));
    }
    // The one anchor that fits by name and key identifier has a key we refuse: say so, rather
    // than that it did not sign (its signature could not even be checked).
    if let (1, Some(weak)) = (candidates.len(), weak) {
        return Err(weak);
    }
    Err(Rejection::UntrustedAnchor {
        who: Who::Cert(top),
        subject: name(last.subject()),
        issuer: name(last.issuer()),
        candidates: anchors
            .named_as_issuer_of(last)
            .into_iter()
            .map(|a| a.reference(None))
            .collect(),
        ignored: anchors.ignored_named_as_issuer_of(last),
        loaded: anchors.anchors().len(),
    })
}

/// A distinguished name as one printable line. Names come from the service's certificates and
/// end up in logs, `status` and systemd's status line, where a newline would forge a line.
/// Cut at 256 characters: a name can be as long as the response.
fn name(n: &x509_parser::x509::X509Name<'_>) -> String {
    crate::text::bounded(&n.to_string(), NAME_LIMIT)
}

/// Longest name (in characters) put into a message.
const NAME_LIMIT: usize = 256;

/// A DER INTEGER's leading 0x00 only keeps it positive; `openssl -serial` does not print it.
fn trim_sign_byte(serial: &[u8]) -> &[u8] {
    match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testca::TestCa;
    use std::path::Path;
    use time::macros::datetime;

    fn anchors(pem: &str) -> TrustAnchors {
        TrustAnchors::from_pem(pem.as_bytes(), Path::new("root.pem")).unwrap()
    }

    const SAMPLE: &str =
        include_str!("../../crates/emulator/data/sample-certificates-response.json");

    fn sample_certs() -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        serde_json::from_value(v["certificates"].clone()).unwrap()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn documented_sample_is_rejected_as_expired() {
        let e = validate(&sample_certs(), b"not our key", None, now(), DEFAULT_SKEW).unwrap_err();
        match &e {
            Rejection::Expired {
                who: Who::Cert(0),
                not_after,
                ..
            } => {
                assert_eq!(not_after, "2022-11-01T14:20:14Z")
            }
            other => panic!("expected the leaf to be expired, got {other:?}"),
        }
        assert!(e.to_string().contains("expired at 2022-11-01T14:20:14Z"));
    }

    #[test]
    fn documented_sample_chain_is_otherwise_well_formed() {
        // Inside the sample's validity window the only thing wrong is that the key is not ours:
        // proves the chain and CA checks pass on IBM's own documented output.
        let at = datetime!(2022-11-01 14:00 UTC);
        let e = validate(&sample_certs(), b"not our key", None, at, DEFAULT_SKEW).unwrap_err();
        assert_eq!(e, Rejection::KeyMismatch);
    }

    #[test]
    fn good_chain_is_verified_with_the_leaf_facts() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let v = validate(&issued.certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap();
        assert_eq!(v.chain_der.len(), 2);
        assert_eq!(v.leaf.serial_hex, issued.serial_hex);
        assert_eq!(v.leaf.lifetime(), Duration::from_secs(3600));
        assert!(!v.reordered);
        assert!(v.leaf_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(v.chain_pem(), issued.certs[1].clone());
    }

    #[test]
    fn trust_anchor_accepts_own_root_and_refuses_a_foreign_one() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let own = anchors(&ca.root_pem());
        assert!(validate(
            &issued.certs,
            &issued.key_der,
            Some(&own),
            now(),
            DEFAULT_SKEW
        )
        .is_ok());
        let foreign = anchors(&TestCa::new().root_pem());
        let e = validate(
            &issued.certs,
            &issued.key_der,
            Some(&foreign),
            now(),
            DEFAULT_SKEW,
        )
        .unwrap_err();
        assert!(matches!(e, Rejection::UntrustedAnchor { .. }), "{e:?}");
    }

    #[test]
    fn wrong_key_is_refused() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let other = crate::pki::PrivateKey::generate(2048).unwrap();
        let e = validate(
            &issued.certs,
            &other.public_key_der().unwrap(),
            None,
            now(),
            DEFAULT_SKEW,
        )
        .unwrap_err();
        assert_eq!(e, Rejection::KeyMismatch);
    }

    #[test]
    fn leaf_alone_is_refused() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let e = validate(
            &issued.certs[..1],
            &issued.key_der,
            None,
            now(),
            DEFAULT_SKEW,
        )
        .unwrap_err();
        assert_eq!(e, Rejection::NoIntermediate);
    }

    #[test]
    fn expired_and_future_leaves_are_refused_with_skew_honoured() {
        let ca = TestCa::new();
        let issued = ca.issue(600, 0);
        let t = now();
        let e = validate(
            &issued.certs,
            &issued.key_der,
            None,
            t + Duration::from_secs(601),
            DEFAULT_SKEW,
        );
        assert!(
            matches!(
                e,
                Err(Rejection::Expired {
                    who: Who::Cert(0),
                    ..
                })
            ),
            "{e:?}"
        );
        // Issued 4 minutes "in the future": inside the 5-minute skew, accepted.
        let ahead = ca.issue(3600, 240);
        assert!(validate(&ahead.certs, &ahead.key_der, None, t, DEFAULT_SKEW).is_ok());
        let far = ca.issue(3600, 600);
        let e = validate(&far.certs, &far.key_der, None, t, DEFAULT_SKEW);
        assert!(
            matches!(
                e,
                Err(Rejection::NotYetValid {
                    who: Who::Cert(0),
                    ..
                })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn leaf_signed_outside_the_chain_is_refused() {
        let ca = TestCa::new();
        let other = TestCa::new();
        let issued = other.issue_for_intermediate_name_of(&ca, 3600);
        let mut certs = issued.certs.clone();
        certs[1] = ca.intermediate_pem();
        let e = validate(&certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap_err();
        assert!(
            matches!(
                e,
                Rejection::BadSignature {
                    index: 0,
                    issuer_index: 1,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn unrelated_intermediate_breaks_the_chain() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let certs = vec![issued.certs[0].clone(), TestCa::new().intermediate_pem()];
        let e = validate(&certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap_err();
        assert!(matches!(e, Rejection::BrokenChain { .. }), "{e:?}");
    }

    #[test]
    fn non_ca_intermediate_is_refused() {
        let ca = TestCa::new();
        let issued = ca.issue_under_non_ca(3600);
        let e = validate(&issued.certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap_err();
        assert!(
            matches!(
                e,
                Rejection::NotCa {
                    who: Who::Cert(1),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn reversed_order_is_accepted_and_reported() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let certs = vec![issued.certs[1].clone(), issued.certs[0].clone()];
        let v = validate(&certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap();
        assert!(v.reordered);
        assert_eq!(v.leaf.serial_hex, issued.serial_hex);
        assert_eq!(v.chain_pem(), issued.certs[1]);
    }

    #[test]
    fn malformed_elements_are_named() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let mut certs = issued.certs.clone();
        certs.push("hello".into());
        assert_eq!(
            validate(&certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap_err(),
            Rejection::NotPem { index: 2 }
        );
        let garbage = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        let certs = vec![issued.certs[0].clone(), garbage.to_string()];
        assert!(matches!(
            validate(&certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap_err(),
            Rejection::BadDer { index: 1, .. }
        ));
        let doubled = vec![
            format!("{}{}", issued.certs[0], issued.certs[1]),
            issued.certs[1].clone(),
        ];
        assert!(matches!(
            validate(&doubled, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap_err(),
            Rejection::ExtraData { index: 0, .. }
        ));
        assert_eq!(
            validate(&[], &issued.key_der, None, now(), DEFAULT_SKEW).unwrap_err(),
            Rejection::Empty
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        /// A valid response (leaf for an RSA-2048 key + intermediate) and its root, made once:
        /// the mutated and shuffled variants below reach the DER parser, the signature checks
        /// and the anchor check, not only the PEM scanner.
        struct Fixture {
            certs: Vec<String>,
            key_der: Vec<u8>,
            root_pem: String,
        }

        fn fixture() -> &'static Fixture {
            static F: OnceLock<Fixture> = OnceLock::new();
            F.get_or_init(|| {
                let ca = TestCa::new();
                let issued = ca.issue(3600, 0);
                Fixture {
                    certs: issued.certs,
                    key_der: issued.key_der,
                    root_pem: ca.root_pem(),
                }
            })
        }

        fn base64_of(bytes: &[u8]) -> String {
            openssl::base64::encode_block(bytes)
        }

        /// One element of the `certificates` array.
        fn element() -> impl Strategy<Value = String> {
            let real = || {
                (0usize..3).prop_map(|i| {
                    let f = fixture();
                    [f.certs[0].clone(), f.certs[1].clone(), f.root_pem.clone()][i].clone()
                })
            };
            prop_oneof![
                // Anything at all.
                any::<String>(),
                // Text that starts like PEM, then random base64 (and maybe no footer).
                (
                    proptest::collection::vec(any::<u8>(), 0..1500),
                    any::<bool>(),
                    "[A-Z ]{0,20}"
                )
                    .prop_map(|(der, footer, label)| {
                        let label = if label.is_empty() {
                            "CERTIFICATE".to_string()
                        } else {
                            label
                        };
                        let mut s = format!("-----BEGIN {label}-----\n{}\n", base64_of(&der));
                        if footer {
                            s.push_str(&format!("-----END {label}-----\n"));
                        }
                        s
                    }),
                // A real certificate with one base64 character replaced.
                (
                    real(),
                    any::<prop::sample::Index>(),
                    any::<prop::sample::Index>()
                )
                    .prop_map(|(pem, at, with)| {
                        const B64: &[u8] =
                            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n-";
                        let mut bytes = pem.into_bytes();
                        let i = at.index(bytes.len());
                        bytes[i] = B64[with.index(B64.len())];
                        String::from_utf8(bytes).unwrap()
                    }),
                // A real certificate's DER with bytes flipped, re-armoured (valid base64).
                (
                    real(),
                    proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
                )
                    .prop_map(|(pem, flips)| {
                        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
                        let mut der = parsed.contents;
                        for (at, x) in flips {
                            let i = at.index(der.len());
                            der[i] ^= x;
                        }
                        crate::pki::pem_encode("CERTIFICATE", &der)
                    }),
                // A real certificate cut short, or with text around it.
                (real(), any::<prop::sample::Index>()).prop_map(|(pem, at)| {
                    let cut = at.index(pem.len() + 1);
                    pem[..cut].to_string()
                }),
                (real(), any::<String>(), any::<String>())
                    .prop_map(|(pem, before, after)| format!("{before}{pem}{after}")),
                // Unchanged.
                real(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// validate() answers every input with Ok or a Rejection; it never panics.
            #[test]
            fn validate_never_panics(
                certs in proptest::collection::vec(element(), 0..=4),
                our_key_is_real in any::<bool>(),
                random_key in proptest::collection::vec(any::<u8>(), 0..300),
                with_anchor in any::<bool>(),
                // 1970 to 2100, and the test CA's own window.
                now_s in prop_oneof![0i64..4_102_444_800, Just(-1)],
                skew_s in 0u64..=86_400,
            ) {
                let f = fixture();
                let key = if our_key_is_real { f.key_der.clone() } else { random_key };
                let anchor = with_anchor.then(|| anchors(&f.root_pem));
                let now = if now_s < 0 {
                    OffsetDateTime::now_utc()
                } else {
                    OffsetDateTime::from_unix_timestamp(now_s).unwrap()
                };
                let _ = validate(&certs, &key, anchor.as_ref(), now, Duration::from_secs(skew_s));
            }

            /// TrustAnchors::from_pem (an anchor file's bytes) never panics.
            #[test]
            fn anchor_from_pem_never_panics(
                bytes in proptest::collection::vec(any::<u8>(), 0..3000),
                text in element(),
            ) {
                let _ = TrustAnchors::from_pem(&bytes, Path::new("a.pem"));
                let _ = TrustAnchors::from_pem(text.as_bytes(), Path::new("a.pem"));
                let _ = LeafInfo::from_pem(&bytes);
                let _ = LeafInfo::from_pem(text.as_bytes());
            }
        }

        #[test]
        fn the_fixture_itself_validates() {
            let f = fixture();
            let anchor = anchors(&f.root_pem);
            validate(&f.certs, &f.key_der, Some(&anchor), now(), DEFAULT_SKEW).unwrap();
        }
    }

    /// A tiny self-signed EC CA named `cn`, signed by `signer` (itself when `None`), PEM.
    fn tiny_ca(
        cn: &str,
        key: &openssl::pkey::PKey<openssl::pkey::Private>,
        signer: Option<&openssl::pkey::PKey<openssl::pkey::Private>>,
    ) -> String {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, x509};
        let mut name = x509::X509Name::builder().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = x509::X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let bc = openssl::x509::extension::BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .unwrap();
        b.append_extension(bc).unwrap();
        let signer = signer.unwrap_or(key);
        let digest = match signer.id() {
            openssl::pkey::Id::ED25519 => MessageDigest::null(),
            _ => MessageDigest::sha256(),
        };
        b.sign(signer, digest).unwrap();
        String::from_utf8(b.build().to_pem().unwrap()).unwrap()
    }

    fn ec_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
        openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
    }

    /// The promise of issue 17: a hostile response the size of the client's 1 MiB cap, made of
    /// as many distinct tiny self-signed CAs as fit (the old chain search was cubic in them:
    /// 5-6 s of CPU), is refused in well under 100 ms, before any signature is checked.
    #[test]
    fn a_hostile_1_mib_response_is_refused_in_milliseconds() {
        // Ed25519: the smallest certificates, so the most of them.
        let key = openssl::pkey::PKey::generate_ed25519().unwrap();
        let mut certificates = Vec::new();
        let mut size = 200;
        loop {
            let pem = tiny_ca(&format!("c{}", certificates.len()), &key, None);
            // JSON: quotes, a comma and "\n" escapes for each line break.
            let encoded = pem.len() + 3 + pem.matches('\n').count();
            if size + encoded > 1 << 20 {
                break;
            }
            size += encoded;
            certificates.push(pem);
        }
        let body = serde_json::json!({
            "certificates": certificates,
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-01T01:00:00Z",
            "expires_in": 3600,
            "id": "x",
        })
        .to_string();
        assert!(
            body.len() <= 1 << 20 && body.len() > 1_000_000,
            "{}",
            body.len()
        );

        let started = std::time::Instant::now();
        let parsed: crate::metadata::api::CertificateResponse =
            serde_json::from_str(&body).unwrap();
        let parse = started.elapsed();
        let started = std::time::Instant::now();
        let e = validate(&parsed.certificates, b"our key", None, now(), DEFAULT_SKEW).unwrap_err();
        let refuse = started.elapsed();
        eprintln!(
            "hostile response: {} bytes, {} certificates; JSON parse {parse:?}, refused in {refuse:?}",
            body.len(),
            parsed.certificates.len()
        );
        assert_eq!(
            e,
            Rejection::TooManyCertificates {
                count: parsed.certificates.len()
            }
        );
        assert!(e.to_string().contains("at most 16"), "{e}");
        assert!(
            refuse < Duration::from_millis(100),
            "refusing took {refuse:?}"
        );
    }

    /// Inside the cap, the worst case: 15 CAs with one name and no key identifiers, sent so
    /// that each link's issuer is the last candidate tried (120 signature checks at most).
    #[test]
    fn the_worst_chain_inside_the_cap_is_bounded() {
        let keys: Vec<_> = (0..15).map(|_| ec_key()).collect();
        // cas[i] is signed by cas[i + 1]; the last one by itself.
        let cas: Vec<String> = (0..15)
            .map(|i| tiny_ca("same", &keys[i], keys.get(i + 1)))
            .collect();
        let our = crate::pki::PrivateKey::generate(2048).unwrap();
        let leaf = {
            use openssl::{asn1::Asn1Time, hash::MessageDigest, x509};
            let mut name = x509::X509Name::builder().unwrap();
            name.append_entry_by_text("CN", "same").unwrap();
            let name = name.build();
            let mut leaf_name = x509::X509Name::builder().unwrap();
            leaf_name.append_entry_by_text("CN", "leaf").unwrap();
            let mut b = x509::X509::builder().unwrap();
            b.set_version(2).unwrap();
            b.set_subject_name(&leaf_name.build()).unwrap();
            b.set_issuer_name(&name).unwrap();
            let public =
                openssl::pkey::PKey::public_key_from_der(&our.public_key_der().unwrap()).unwrap();
            b.set_pubkey(&public).unwrap();
            b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
                .unwrap();
            b.sign(&keys[0], MessageDigest::sha256()).unwrap();
            String::from_utf8(b.build().to_pem().unwrap()).unwrap()
        };
        // Leaf first, then the CAs top-down: every search meets the wrong ones first.
        let mut certificates = vec![leaf];
        certificates.extend(cas.iter().rev().cloned());
        assert_eq!(certificates.len(), MAX_CERTIFICATES);
        let started = std::time::Instant::now();
        let v = validate(
            &certificates,
            &our.public_key_der().unwrap(),
            None,
            now(),
            DEFAULT_SKEW,
        )
        .unwrap();
        let took = started.elapsed();
        eprintln!("worst chain of {MAX_CERTIFICATES} inside the cap: validated in {took:?}");
        assert_eq!(v.chain_der.len(), MAX_CERTIFICATES);
        assert!(v.reordered);
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn a_response_root_that_is_not_an_anchor_is_refused() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let mut certs = issued.certs.clone();
        certs.push(ca.root_pem());
        // Without anchors a root in the response is accepted (the signatures hold) ...
        let v = validate(&certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap();
        assert_eq!(v.chain_der.len(), 3);
        assert_eq!(v.anchor, None);
        // ... with its own root pinned it is the anchor ...
        let own = anchors(&ca.root_pem());
        let v = validate(&certs, &issued.key_der, Some(&own), now(), DEFAULT_SKEW).unwrap();
        assert_eq!(
            v.anchor.unwrap().fingerprint_sha256,
            own.anchors()[0].fingerprint_sha256
        );
        assert_eq!(v.intermediate.subject, name_of(&ca.intermediate_pem()));
        // ... and with another root pinned it is refused, naming the anchors.
        let foreign = anchors(&TestCa::new().root_pem());
        let e = validate(&certs, &issued.key_der, Some(&foreign), now(), DEFAULT_SKEW).unwrap_err();
        assert!(
            matches!(
                e,
                Rejection::UntrustedAnchor {
                    who: Who::Cert(2),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("none of the 1 configured trust anchors"),
            "{e}"
        );
    }

    #[test]
    fn a_pinned_intermediate_defers_to_a_pinned_root_above_it() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        // IBM's files hold intermediates too: pinned alone, the intermediate is the anchor ...
        let only_inter = anchors(&ca.intermediate_pem());
        let v = validate(
            &issued.certs,
            &issued.key_der,
            Some(&only_inter),
            now(),
            DEFAULT_SKEW,
        )
        .unwrap();
        assert_eq!(v.anchor.unwrap().subject, name_of(&ca.intermediate_pem()));
        // ... but with its root pinned as well, the chain ends at the root.
        let both = anchors(&format!("{}{}", ca.intermediate_pem(), ca.root_pem()));
        let v = validate(
            &issued.certs,
            &issued.key_der,
            Some(&both),
            now(),
            DEFAULT_SKEW,
        )
        .unwrap();
        assert_eq!(v.anchor.unwrap().subject, name_of(&ca.root_pem()));
        assert_eq!(v.intermediate.subject, name_of(&ca.intermediate_pem()));
    }

    fn name_of(pem: &str) -> String {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, c) = X509Certificate::from_der(&p.contents).unwrap();
        name(c.subject())
    }

    #[test]
    fn a_certificate_outside_the_chain_is_refused() {
        let ca = TestCa::new();
        let issued = ca.issue(3600, 0);
        let mut certs = issued.certs.clone();
        certs.push(ca.root_pem());
        certs.push(TestCa::new().root_pem());
        let e = validate(&certs, &issued.key_der, None, now(), DEFAULT_SKEW).unwrap_err();
        assert_eq!(
            e,
            Rejection::StrayCertificate {
                index: 3,
                subject: name_of(&certs[3])
            }
        );
    }

    #[test]
    fn names_are_printed_on_one_line() {
        let mut b = openssl::x509::X509Name::builder().unwrap();
        b.append_entry_by_text("O", "evil\nREADY=1").unwrap();
        let der = b.build().to_der().unwrap();
        let (_, parsed) = x509_parser::x509::X509Name::from_der(&der).unwrap();
        let shown = name(&parsed);
        assert!(!shown.contains('\n'), "{shown:?}");
        assert!(shown.contains("READY=1"));
    }
}
