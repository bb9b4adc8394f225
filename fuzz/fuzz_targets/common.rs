//! What the program does with a certificate set and a token answer from the service, shared by
//! the `service_body` and `client` targets (included with `#[path]`, not a target itself).

use std::path::Path;
use std::sync::OnceLock;

use eit_certd::config::CertificateConfig;
use eit_certd::hooks::HookEnv;
use eit_certd::pki::validate::{validate, LeafInfo, Rejection, Verified, DEFAULT_SKEW};
use eit_certd::pki::TrustAnchors;
use eit_certd::schedule::Policy;
use eit_certd::status;
use time::macros::datetime;
use time::OffsetDateTime;

/// A fixed "now" for the first pass; the second pass takes one inside the first certificate's
/// validity window, so that seeds issued at any time reach the rules after the window check.
const FIXED_NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

struct Fixtures {
    our_key_der: Vec<u8>,
    anchor: TrustAnchors,
    policy: Policy,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let key =
            openssl::pkey::PKey::public_key_from_pem(include_bytes!("../fixtures/our-key.pub.pem"))
                .expect("fixtures/our-key.pub.pem is a public key");
        Fixtures {
            our_key_der: key.public_key_to_der().expect("DER encoding"),
            anchor: TrustAnchors::from_pem(
                include_bytes!("../fixtures/anchor.pem"),
                Path::new("fixtures/anchor.pem"),
            )
            .expect("fixtures/anchor.pem is a certificate"),
            policy: Policy::from(&CertificateConfig::default()),
        }
    })
}

pub fn certificates(certs: &[String]) {
    let f = fixtures();
    // Each element alone, as an installed cert.pem or a configured trust anchor is read.
    let mut first = None;
    for (i, pem) in certs.iter().enumerate() {
        let _ = TrustAnchors::from_pem(pem.as_bytes(), Path::new("certificates[i]"));
        if let Ok(info) = LeafInfo::from_pem(pem.as_bytes()) {
            leaf_consumers(&info, &f.policy);
            if i == 0 {
                first = Some(info);
            }
        }
    }

    verdict(validate(
        certs,
        &f.our_key_der,
        None,
        FIXED_NOW,
        DEFAULT_SKEW,
    ));
    let inside = first.and_then(|info| info.not_before.checked_add(time::Duration::minutes(1)));
    if let Some(now) = inside {
        verdict(validate(certs, &f.our_key_der, None, now, DEFAULT_SKEW));
        verdict(validate(
            certs,
            &f.our_key_der,
            Some(&f.anchor),
            now,
            DEFAULT_SKEW,
        ));
    }
}

fn verdict(result: Result<Verified, Rejection>) {
    match result {
        Ok(verified) => {
            let f = fixtures();
            assert!(
                verified.chain_der.len() >= 2,
                "a verified set has an intermediate"
            );
            assert_eq!(
                verified.leaf.public_key_der, f.our_key_der,
                "verified leaf is ours"
            );
            let _ = (verified.leaf_pem(), verified.chain_pem());
            leaf_consumers(&verified.leaf, &f.policy);
        }
        Err(rejection) => {
            let message = rejection.to_string();
            assert!(
                !message.chars().any(char::is_control),
                "a rejection must be one line: {message:?}"
            );
        }
    }
}

/// What the daemon, `status` and the hooks do with a certificate's facts.
fn leaf_consumers(info: &LeafInfo, policy: &Policy) {
    let lifetime = info.lifetime();
    let remaining = info.remaining(FIXED_NOW);
    let _ = status::bar(remaining, lifetime);
    let next = policy.next_renewal(info.not_before, info.not_after, 0.5);
    if info.not_after > info.not_before {
        assert!(
            next >= info.not_before && next <= info.not_after,
            "renewal {next} outside [{}, {}]",
            info.not_before,
            info.not_after
        );
    }
    let _ = policy.is_due(info.not_before, info.not_after, FIXED_NOW);
    let env = HookEnv::new(Path::new("/var/lib/eit-certd/generations/1"), info, None);
    for (name, value) in env.vars() {
        assert!(
            !value.contains('\0') && !value.contains('\n'),
            "hook variable {name} = {value:?}"
        );
    }
}
