//! The emulator's own wire types for the documented API (`shared/api/identity-operations.md`),
//! written from the documentation, not shared with eit-certd's client: a mistake in one side's
//! idea of the wire format then shows up as a failing exchange instead of being made twice.
//! The tests at the bottom hold them to the documented samples.

use serde::{Deserialize, Serialize};

/// The two path families. `/identity/v1` is the current one; `/instance_identity/v1` is
/// served only for version dates before [`IDENTITY_ONLY_FROM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFamily {
    Identity,
    InstanceIdentity,
}

impl ApiFamily {
    pub fn prefix(self) -> &'static str {
        match self {
            ApiFamily::Identity => "/identity/v1",
            ApiFamily::InstanceIdentity => "/instance_identity/v1",
        }
    }
}

/// The first `version` date that serves instance identity tokens.
pub const MIN_VERSION: &str = "2022-03-01";

/// From this `version` date on only `/identity/v1` is served.
pub const IDENTITY_ONLY_FROM: &str = "2025-08-26";

/// `PUT …/token` body: `{"expires_in": 3600}`; the field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub expires_in: Option<u64>,
}

/// The token answer (also the IAM token's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub created_at: String,
    pub expires_at: String,
    pub expires_in: u64,
}

/// `POST …/certificates` body: `csr` required, `expires_in` optional (default 3600).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    pub csr: String,
    pub expires_in: Option<u64>,
}

/// The certificates answer (201): the leaf first, then its intermediate(s).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateResponse {
    pub certificates: Vec<String>,
    pub created_at: String,
    pub expires_at: String,
    pub expires_in: u64,
    pub id: String,
}

/// A trusted profile, by id or CRN.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TrustedProfileRef {
    pub id: Option<String>,
    pub crn: Option<String>,
}

/// `POST …/iam_token` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IamTokenRequest {
    pub trusted_profile: Option<TrustedProfileRef>,
}

/// IBM Cloud's error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub errors: Vec<ErrorItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorItem {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn single(status: u16, code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            errors: vec![ErrorItem {
                code: code.to_string(),
                message: message.into(),
            }],
            trace: None,
            status_code: Some(status),
        }
    }
}

/// What the tests read back from `GET /metadata/v1/instance`.
#[cfg(test)]
#[derive(Debug, Clone, Deserialize)]
pub struct Instance {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub crn: String,
    pub zone: Zone,
}

#[cfg(test)]
#[derive(Debug, Clone, Deserialize)]
pub struct Zone {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented samples, as shipped beside the API docs.
    const SAMPLE_RESPONSE: &str = include_str!("../data/sample-certificates-response.json");

    #[test]
    fn the_documented_response_has_exactly_our_fields() {
        let sample: serde_json::Value = serde_json::from_str(SAMPLE_RESPONSE).unwrap();
        let parsed: CertificateResponse = serde_json::from_value(sample.clone()).unwrap();
        let back = serde_json::to_value(&parsed).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&back), keys(&sample));
        assert_eq!(parsed.certificates.len(), 2);
    }

    #[test]
    fn documented_requests_parse() {
        let csr = include_str!("../data/sample-request.csr");
        let body = serde_json::json!({ "csr": csr, "expires_in": 3600 });
        let r: CertificateRequest = serde_json::from_value(body).unwrap();
        assert!(r.csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let r: CertificateRequest =
            serde_json::from_value(serde_json::json!({ "csr": csr })).unwrap();
        assert_eq!(r.expires_in, None);
        let t: TokenRequest = serde_json::from_str(r#"{"expires_in": 3600}"#).unwrap();
        assert_eq!(t.expires_in, Some(3600));
        assert!(serde_json::from_str::<TokenRequest>(r#"{"expire_in": 3600}"#).is_err());
    }
}
