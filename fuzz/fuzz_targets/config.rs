//! The config loader: any text → `Config::parse` must return `Ok` or an error naming the file,
//! never panic; and an accepted config must be usable by what consumes it without panicking:
//! the renewal schedule (`Policy`), the retry backoff (`Backoff`, as the daemon builds it), the
//! CSR built from `certificate.subject`, and the `Display` of the values that go into messages.
//!
//! It also checks the range promises of issue 12 that the loader enforces (#2: every duration
//! can be added to "now"; #10: `output.dir` absolute).

#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use eit_certd::config::Config;
use eit_certd::pki::{csr, PrivateKey};
use eit_certd::schedule::{Backoff, Failure, Policy};
use libfuzzer_sys::fuzz_target;
use time::macros::datetime;

const PATH: &str = "/etc/eit-certd/config.toml";

fuzz_target!(|data: &[u8]| {
    // Config::load reads the file with read_to_string: text that is not UTF-8 never gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new(PATH)) {
        Ok(config) => accepted(&config),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(PATH),
                "the error names the file: {message:?}"
            );
        }
    }
});

fn accepted(config: &Config) {
    let _ = (
        config.metadata.endpoint.to_string(),
        config.metadata.version.to_string(),
    );
    schedule(config);
    backoff(config);
    if config.certificate.subject != Default::default() {
        // Ok or a clean error; OpenSSL decides what a subject value may hold.
        let _ = csr::build(key(), &config.certificate.subject);
    }
    issue12(config);
}

/// Renewal falls inside the certificate's lifetime, for the lifetime asked for and for ones
/// the service may impose instead (it may cap lifetimes).
fn schedule(config: &Config) {
    let policy = Policy::from(&config.certificate);
    let not_before = datetime!(2026-01-01 00:00 UTC);
    for lifetime in [
        config.certificate.lifetime.0,
        Duration::from_secs(5),
        Duration::from_secs(30 * 86400),
    ] {
        let not_after = not_before + lifetime;
        for unit in [0.0, 0.5, 0.999_999] {
            let at = policy.next_renewal(not_before, not_after, unit);
            assert!(
                at >= not_before && at <= not_after,
                "renewal at {at} for a certificate valid {not_before} to {not_after}"
            );
        }
        let _ = policy.is_due(not_before, not_after, not_before);
    }
}

/// Retry delays stay between the floor and the cap, whatever the failure count and
/// `Retry-After`.
fn backoff(config: &Config) {
    let b = Backoff {
        initial: config.retry.initial.0,
        cap: config.retry.max.0,
    };
    let failures = [
        Failure::Permanent,
        Failure::Transient { retry_after: None },
        Failure::Transient {
            retry_after: Some(Duration::MAX),
        },
    ];
    for failure in failures {
        for count in [1, 2, 12, 31, 64, u32::MAX] {
            for unit in [0.0, 0.5, 1.0] {
                let d = b.delay(count, failure, unit);
                assert!(d >= b.floor() && d <= b.cap.max(b.floor()), "{d:?}");
            }
        }
    }
}

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).expect("RSA-2048 key generation"))
}

fn issue12(config: &Config) {
    let now = std::time::Instant::now();
    let wall = time::OffsetDateTime::now_utc();
    let mut durations = vec![
        ("metadata.timeout", config.metadata.timeout.0),
        ("metadata.token_lifetime", config.metadata.token_lifetime.0),
        ("certificate.lifetime", config.certificate.lifetime.0),
        (
            "certificate.min_remaining",
            config.certificate.min_remaining.0,
        ),
        ("certificate.jitter", config.certificate.jitter.0),
        ("retry.initial", config.retry.initial.0),
        ("retry.max", config.retry.max.0),
    ];
    durations.extend(config.hooks.iter().map(|h| ("hooks.timeout", h.timeout.0)));
    for (key, d) in durations {
        assert!(
            now.checked_add(d).is_some()
                && time::Duration::try_from(d)
                    .ok()
                    .and_then(|d| wall.checked_add(d))
                    .is_some(),
            "{key} = {d:?} passes the loader but cannot be added to now"
        );
    }
    let dir = &config.output.dir;
    assert!(
        dir.is_absolute(),
        "output.dir {dir:?} accepted but not absolute"
    );
}
