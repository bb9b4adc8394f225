//! Expiry ahead of the CAs above the leaf: the intermediate the service signs with and the
//! trust anchor the chain ends at. A fresh leaf cannot fix a CA that expires, so the daemon
//! warns [`WARN_BEFORE`] ahead (270 days, when IBM's own mount helper starts warning): in the
//! log at start and after each install, in `status`, and as the metric
//! `eit_certd_ca_not_after_seconds{role="intermediate"|"anchor"}`.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::pki::validate::{CaInfo, Verified};
use crate::pki::TrustAnchors;
use crate::text::rfc3339;

/// How long before a CA's notAfter the warnings start.
pub const WARN_BEFORE: Duration = Duration::from_secs(270 * 24 * 3600);

/// The largest `chain.pem` read back (a chain of a few CAs is a few KiB).
const MAX_CHAIN_BYTES: u64 = 256 * 1024;

/// The CAs above the installed leaf, as far as they are known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CaExpiry {
    /// Of the intermediates installed with the leaf, the one that expires first.
    pub intermediate: Option<CaInfo>,
    /// The configured trust anchor the chain ends at.
    pub anchor: Option<CaInfo>,
}

impl CaExpiry {
    /// From a set that was just validated.
    pub fn from_verified(verified: &Verified) -> CaExpiry {
        CaExpiry {
            intermediate: Some(verified.intermediate.clone()),
            anchor: verified.anchor.clone(),
        }
    }

    /// From an installed set's `chain.pem` and the configured anchors (the one whose key
    /// signed the top of the chain). Whatever cannot be read is left out.
    pub fn of_chain_file(chain: &Path, anchors: Option<&TrustAnchors>) -> CaExpiry {
        let Some(pem) = read_chain(chain) else {
            return CaExpiry::default();
        };
        let ders: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(&pem)
            .map_while(Result::ok)
            .filter(|p| p.label == "CERTIFICATE")
            .map(|p| p.contents)
            .collect();
        let certs: Vec<X509Certificate<'_>> = ders
            .iter()
            .filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c))
            .collect();
        let top = certs.last();
        let anchor = match (anchors, top) {
            (Some(anchors), Some(top)) => anchors.issuer_of(top),
            _ => None,
        };
        let intermediate = certs
            .iter()
            .filter(|c| anchor.is_none_or(|a| a.der() != c.as_raw()))
            .min_by_key(|c| c.validity().not_after.to_datetime())
            .or(certs.first())
            .map(CaInfo::of);
        CaExpiry {
            intermediate,
            anchor: anchor.map(CaInfo::of_anchor),
        }
    }

    /// One sentence per CA that expires within [`WARN_BEFORE`] of `now` (or has expired).
    pub fn warnings(&self, now: OffsetDateTime) -> Vec<String> {
        let mut out = Vec::new();
        for (role, ca) in self.roles() {
            let Some(ca) = ca else { continue };
            if ca.not_after > now + WARN_BEFORE {
                continue;
            }
            let from = ca
                .source
                .as_ref()
                .map(|p| format!(", from {}", p.display()))
                .unwrap_or_default();
            let when = if ca.not_after <= now {
                format!("expired at {}", rfc3339(ca.not_after))
            } else {
                let days = (ca.not_after - now).whole_days();
                format!("expires at {} (in {days} days)", rfc3339(ca.not_after))
            };
            let fix = match role {
                "anchor" => {
                    "add its successor to certificate.trust_anchor(s) before then (a newer \
                     release of IBM's mount helper ships current roots)"
                }
                _ => {
                    "the service must switch to a new intermediate before then; make sure its \
                     root is among certificate.trust_anchor(s)"
                }
            };
            out.push(format!(
                "the {role} CA {} (sha256 {}{from}) {when}: no renewal can outlive it; {fix}",
                ca.subject, ca.fingerprint_sha256
            ));
        }
        out
    }

    /// (role label, CA) pairs, the label as the metric and the messages name it.
    pub fn roles(&self) -> [(&'static str, Option<&CaInfo>); 2] {
        [
            ("intermediate", self.intermediate.as_ref()),
            ("anchor", self.anchor.as_ref()),
        ]
    }
}

/// `chain.pem` of the installed set, capped; `None` when it cannot be read. Not through a
/// symbolic link, and non-blocking: a FIFO planted there must not hang the daemon.
fn read_chain(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_CHAIN_BYTES).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ca(subject: &str, not_after: OffsetDateTime, source: Option<&str>) -> CaInfo {
        CaInfo {
            subject: subject.into(),
            fingerprint_sha256: "ab".repeat(32),
            not_after,
            source: source.map(Into::into),
        }
    }

    #[test]
    fn warns_only_within_270_days() {
        let now = datetime!(2026-01-01 00:00 UTC);
        let far = CaExpiry {
            intermediate: Some(ca("CN=i", now + time::Duration::days(271), None)),
            anchor: Some(ca(
                "CN=r",
                now + time::Duration::days(3000),
                Some("/a/r.crt"),
            )),
        };
        assert!(far.warnings(now).is_empty());

        let near = CaExpiry {
            intermediate: Some(ca("CN=i", now + time::Duration::days(269), None)),
            anchor: Some(ca("CN=r", now + time::Duration::days(10), Some("/a/r.crt"))),
        };
        let w = near.warnings(now);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("the intermediate CA CN=i"), "{}", w[0]);
        assert!(w[0].contains("in 269 days"), "{}", w[0]);
        assert!(w[1].starts_with("the anchor CA CN=r"), "{}", w[1]);
        assert!(
            w[1].contains("from /a/r.crt") && w[1].contains("in 10 days"),
            "{}",
            w[1]
        );

        let gone = CaExpiry {
            intermediate: None,
            anchor: Some(ca("CN=r", now - time::Duration::days(1), None)),
        };
        assert!(gone.warnings(now)[0].contains("expired at 2025-12-31T00:00:00Z"));
    }
}
