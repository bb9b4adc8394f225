//! What comes from the metadata service: one response body, read as each documented answer
//! (certificate set, token, IBM error body), and every certificate set that parses is taken
//! through what the daemon does with it: `validate` against our key (with and without a trust
//! anchor), `LeafInfo`, the renewal schedule and the hook environment.
//!
//! The oracle is "no panic", plus the promises the rest of the program relies on: a verified set
//! is leaf-first, at least two long and for our key; a rejection is one line (it goes into logs,
//! `state.json`, `status` and sd_notify); the token never shows in `Debug`.
//!
//! `fixtures/our-key.pub.pem` and `fixtures/anchor.pem` belong to the seed responses under
//! `seeds/service_body/` (written by `make-seeds.sh`), so mutations of those seeds reach the
//! signature, CA, key and anchor rules instead of stopping at the first check.

#![no_main]

#[path = "common.rs"]
mod common;

use eit_certd::metadata::api::{CertificateResponse, ErrorBody, TokenResponse};
use eit_certd::text::one_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = serde_json::from_slice::<CertificateResponse>(data) {
        common::certificates(&response.certificates);
    }
    if let Ok(token) = serde_json::from_slice::<TokenResponse>(data) {
        token_is_redacted(&token);
    }
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(data) {
        let line = one_line(&body.summary());
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
});

/// `TokenResponse`'s `Debug` must not print the token (a stray `{:?}` in a log line).
fn token_is_redacted(token: &TokenResponse) {
    let secret = &token.access_token;
    // Only tokens that cannot appear in the output by coincidence: long, alphanumeric with a
    // letter (so not the `expires_in` digits, nor made up by escapes), not in the other fields.
    let distinctive = secret.len() >= 16
        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
        && secret.bytes().any(|b| b.is_ascii_alphabetic())
        && !token.created_at.contains(secret.as_str())
        && !token.expires_at.contains(secret.as_str());
    if distinctive {
        assert!(!format!("{token:?}").contains(secret.as_str()));
    }
}
