//! Wire types of the VPC instance metadata service, as eit-certd's client reads and sends them
//! (the emulator has its own; see the `metadata` module).
//!
//! Field names follow the documented JSON exactly (see `shared/api/identity-operations.md`).
//! Types that carry a credential redact it in `Debug`, so a stray `{:?}` never leaks a token.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Service text is cut to this many characters at the wire boundary.
pub const SERVICE_TEXT_LIMIT: usize = 256;

/// A string the service sends that is only ever shown or logged (a date, an id, a name): made
/// fit for one log line here, once, where it enters (control characters and line breaks
/// flattened, at most [`SERVICE_TEXT_LIMIT`] characters), so that no later use can print a
/// terminal escape, forge a log line or write a 200,000-character one.
fn service_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    Ok(crate::text::bounded(&s, SERVICE_TEXT_LIMIT))
}

/// `PUT {family}/token` body.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// `PUT {family}/token` (and `POST {family}/iam_token`) answer.
#[derive(Clone, Deserialize, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(deserialize_with = "service_text")]
    pub created_at: String,
    #[serde(deserialize_with = "service_text")]
    pub expires_at: String,
    pub expires_in: u64,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// `POST {family}/certificates` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    pub csr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// `POST {family}/certificates` answer (201). `certificates[0]` is the leaf, the rest its
/// intermediates. `expires_at` is informational only: the certificate's own notAfter rules.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CertificateResponse {
    pub certificates: Vec<String>,
    #[serde(deserialize_with = "service_text")]
    pub created_at: String,
    #[serde(deserialize_with = "service_text")]
    pub expires_at: String,
    pub expires_in: u64,
    #[serde(deserialize_with = "service_text")]
    pub id: String,
}

/// A trusted profile named by id or CRN in `POST {family}/iam_token`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TrustedProfileRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crn: Option<String>,
}

/// `POST {family}/iam_token` body.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct IamTokenRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_profile: Option<TrustedProfileRef>,
}

/// The IBM Cloud error body: `{"errors":[{"code","message","more_info"?}],"trace"?,"status_code"?}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ErrorItem {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_info: Option<String>,
}

impl ErrorBody {
    /// `code: message; code: message` — the form the client puts into its error messages.
    pub fn summary(&self) -> String {
        self.errors
            .iter()
            .map(|e| {
                if e.code.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.code, e.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The subset of `GET /metadata/v1/instance` that eit-certd uses.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Instance {
    #[serde(deserialize_with = "service_text")]
    pub id: String,
    #[serde(deserialize_with = "service_text")]
    pub name: String,
    #[serde(default)]
    #[serde(deserialize_with = "service_text")]
    pub crn: String,
    pub zone: Zone,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Zone {
    #[serde(deserialize_with = "service_text")]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_sample_response_parses() {
        let text = include_str!("../../crates/emulator/data/sample-certificates-response.json");
        let r: CertificateResponse = serde_json::from_str(text).unwrap();
        assert_eq!(r.certificates.len(), 2);
        assert_eq!(r.expires_in, 3600);
        assert_eq!(r.id, "9fd84246-7df4-4667-94e4-8ecde51d5ac5");
    }

    #[test]
    fn error_body_summary_names_code_and_message() {
        let b: ErrorBody = serde_json::from_str(
            r#"{"errors":[{"code":"bad_csr","message":"CN not allowed"}],"trace":"x"}"#,
        )
        .unwrap();
        assert_eq!(b.summary(), "bad_csr: CN not allowed");
    }

    #[test]
    fn token_debug_redacts() {
        let t = TokenResponse {
            access_token: "secret-token-value".into(),
            created_at: String::new(),
            expires_at: String::new(),
            expires_in: 300,
        };
        assert!(!format!("{t:?}").contains("secret-token-value"));
    }
}
