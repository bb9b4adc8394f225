//! HTTP client for the instance metadata service: tokens (cached), certificates, IAM tokens and
//! instance metadata.
//!
//! Every request is bounded twice: by the configured timeout (connect through the last body
//! byte) and by [`BODY_LIMIT`] on what is read, so a slow or endless server is an error, never a
//! hang or an OOM. The access token travels only in the `Authorization` header; it is never put
//! into a URL, an error or a `Debug` string.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::api::{
    ApiFamily, CertificateRequest, CertificateResponse, ErrorBody, IamTokenRequest, Instance,
    TokenRequest, TokenResponse, TrustedProfileRef,
};
use crate::config::{Endpoint, MetadataConfig};

/// Largest response body read from the service. A certificate response is a few KiB.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Where `endpoint = "auto"` looks: https first (secure access), then http.
pub const AUTO_CANDIDATES: [&str; 2] = [
    "https://api.metadata.cloud.ibm.com",
    "http://api.metadata.cloud.ibm.com",
];

/// Which call failed; names the method and path in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Token,
    Certificate,
    IamToken,
    Instance,
}

impl Operation {
    fn method(self) -> Method {
        match self {
            Operation::Token => Method::PUT,
            Operation::Certificate | Operation::IamToken => Method::POST,
            Operation::Instance => Method::GET,
        }
    }

    fn path(self, family: ApiFamily) -> String {
        match self {
            Operation::Token => format!("{}/token", family.prefix()),
            Operation::Certificate => format!("{}/certificates", family.prefix()),
            Operation::IamToken => format!("{}/iam_token", family.prefix()),
            Operation::Instance => "/metadata/v1/instance".to_string(),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Operation::Token => "instance identity token request",
            Operation::Certificate => "certificate request",
            Operation::IamToken => "IAM token request",
            Operation::Instance => "instance metadata request",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what} to {url} {failure}: {cause}; {hint}", what = op.what())]
    Transport {
        op: Operation,
        url: String,
        failure: &'static str,
        cause: String,
        hint: &'static str,
    },
    #[error(
        "{what} to {url} failed with HTTP {status}: {message}{retry}; {hint}",
        what = op.what(),
        message = message.trim_end_matches('.'),
        retry = retry_after.map(|d| format!(" (Retry-After: {}s)", d.as_secs())).unwrap_or_default(),
        hint = status_hint(*status)
    )]
    Status {
        op: Operation,
        url: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{what} to {url}: the response is larger than {limit} bytes; refusing to read more", what = op.what())]
    TooLarge {
        op: Operation,
        url: String,
        limit: usize,
    },
    #[error("{what} to {url}: the response is not the documented JSON ({detail})", what = op.what())]
    BadJson {
        op: Operation,
        url: String,
        detail: String,
    },
    #[error("cannot use metadata.ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot set up the HTTP client: {0}")]
    Build(String),
    #[error("endpoint = \"auto\": neither {} nor {} answered ({detail}); is the metadata service enabled for this instance?", AUTO_CANDIDATES[0], AUTO_CANDIDATES[1])]
    NoEndpoint { detail: String },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        400 => "the service refused the request as malformed: check metadata.version and certificate.subject",
        401 => "the service refused the access token",
        403 | 404 => "is the metadata service enabled for this instance, and metadata.api right for metadata.version?",
        429 => "the service is rate limiting; the installed certificate stays in place and the daemon retries later",
        500..=599 => "the service is failing; the installed certificate stays in place and the daemon retries with backoff",
        _ => "see the service's message",
    }
}

impl ClientError {
    /// HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The service's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A failure that retrying the same request cannot fix (a 4xx other than 401/408/429):
    /// the configuration or the CSR must change first.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => {
                (400..500).contains(status) && !matches!(status, 401 | 408 | 429)
            }
            ClientError::CaFile { .. } | ClientError::Build(_) => true,
            _ => false,
        }
    }
}

/// An access token. Shown only through [`AccessToken::expose`]; wiped from memory on drop.
pub struct AccessToken(Zeroizing<String>);

impl AccessToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

struct CachedToken {
    token: AccessToken,
    /// After this instant the token is not used for a new request (expiry minus margin).
    usable_until: Instant,
}

/// A certificate response together with how the request went.
#[derive(Debug, Clone)]
pub struct Issued {
    pub response: CertificateResponse,
    /// The certificate call answered 401 once and was retried with a fresh token.
    pub token_refreshed: bool,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    family: ApiFamily,
    version: String,
    timeout: Duration,
    token_lifetime: Duration,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("family", &self.family)
            .field("version", &self.version)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Client {
    /// A client for `config`. With `endpoint = "auto"` this probes the candidates (see
    /// [`AUTO_CANDIDATES`]) and keeps the first that answers a token request.
    pub async fn connect(config: &MetadataConfig) -> Result<Client, ClientError> {
        match &config.endpoint {
            Endpoint::Url(url) => Client::new(config, url),
            Endpoint::Auto => Client::probe(config, &AUTO_CANDIDATES).await,
        }
    }

    /// The first of `candidates` that answers a token request.
    async fn probe(config: &MetadataConfig, candidates: &[&str]) -> Result<Client, ClientError> {
        let mut errors = Vec::new();
        for candidate in candidates {
            let client = Client::new(config, candidate)?;
            match client.token().await {
                Ok(()) => {
                    tracing::info!(endpoint = candidate, "endpoint = auto: using {candidate}");
                    return Ok(client);
                }
                Err(e) => {
                    tracing::info!(endpoint = candidate, error = %e, "endpoint = auto: {candidate} did not answer");
                    errors.push(format!("{candidate}: {e}"));
                }
            }
        }
        Err(ClientError::NoEndpoint {
            detail: errors.join("; "),
        })
    }

    /// A client for one base URL, without probing.
    pub fn new(config: &MetadataConfig, base: &str) -> Result<Client, ClientError> {
        let https = base.starts_with("https://");
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("eit-certd/", env!("CARGO_PKG_VERSION")))
            // Without https there is nothing to verify; don't fail on a host without CA roots.
            .tls_built_in_root_certs(https && config.ca_file.is_none());
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| ClientError::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ClientError::CaFile {
                    path: path.clone(),
                    reason: format!("not a PEM certificate bundle ({e})"),
                })?;
            if certs.is_empty() {
                return Err(ClientError::CaFile {
                    path: path.clone(),
                    reason: "it holds no PEM certificate".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            family: config.api,
            version: config.version.to_string(),
            timeout: config.timeout.0,
            token_lifetime: config.token_lifetime.0,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, op: Operation) -> String {
        format!(
            "{}{}?version={}",
            self.base,
            op.path(self.family),
            self.version
        )
    }

    /// A fresh token of `lifetime`, bypassing the cache (for `eit-certd token`).
    pub async fn new_token(&self, lifetime: Duration) -> Result<AccessToken, ClientError> {
        let (token, _) = self.request_token(lifetime).await?;
        Ok(token)
    }

    async fn request_token(
        &self,
        lifetime: Duration,
    ) -> Result<(AccessToken, Duration), ClientError> {
        let body = TokenRequest {
            expires_in: Some(lifetime.as_secs()),
        };
        let mut headers = HeaderMap::new();
        headers.insert("Metadata-Flavor", "ibm".parse().expect("static header"));
        let r: TokenResponse = self.call(Operation::Token, headers, &body).await?;
        if r.access_token.is_empty() {
            return Err(ClientError::BadJson {
                op: Operation::Token,
                url: self.url(Operation::Token),
                detail: "access_token is empty".into(),
            });
        }
        let token = AccessToken(Zeroizing::new(r.access_token.clone()));
        // The response struct's copy is dropped here; overwrite it first.
        drop(Zeroizing::new(r.access_token));
        Ok((token, Duration::from_secs(r.expires_in)))
    }

    /// Runs `f` with a cached token, fetching one if there is none usable.
    async fn with_token<T>(&self, f: impl FnOnce(&AccessToken) -> T) -> Result<T, ClientError> {
        let mut cached = self.cached.lock().await;
        let usable = matches!(&*cached, Some(c) if Instant::now() < c.usable_until);
        if !usable {
            let started = Instant::now();
            let (token, lifetime) = self.request_token(self.token_lifetime).await?;
            // Never start a request with a token that could expire before it completes.
            let margin = self.timeout * 2 + Duration::from_secs(5);
            *cached = Some(CachedToken {
                token,
                usable_until: started + lifetime.saturating_sub(margin),
            });
        }
        Ok(f(&cached.as_ref().expect("filled above").token))
    }

    /// A token for callers that need one (`token` command, probing); goes through the cache.
    pub async fn token(&self) -> Result<(), ClientError> {
        self.with_token(|_| ()).await
    }

    pub async fn forget_token(&self) {
        *self.cached.lock().await = None;
    }

    /// `POST {family}/certificates`. A 401 (token revoked or expired early) drops the cached
    /// token and retries once with a new one.
    pub async fn request_certificate(
        &self,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<Issued, ClientError> {
        let body = CertificateRequest {
            csr: csr_pem.to_string(),
            expires_in: Some(lifetime.as_secs()),
        };
        match self.authorized_call(Operation::Certificate, &body).await {
            Err(ClientError::Status { status: 401, .. }) => {
                tracing::info!("the certificate call answered 401; retrying once with a new token");
                self.forget_token().await;
                let response = self.authorized_call(Operation::Certificate, &body).await?;
                Ok(Issued {
                    response,
                    token_refreshed: true,
                })
            }
            other => other.map(|response| Issued {
                response,
                token_refreshed: false,
            }),
        }
    }

    /// `POST {family}/iam_token` for a trusted profile.
    pub async fn iam_token(&self, profile: TrustedProfileRef) -> Result<AccessToken, ClientError> {
        let body = IamTokenRequest {
            trusted_profile: Some(profile),
        };
        let r: TokenResponse = self.authorized_call(Operation::IamToken, &body).await?;
        Ok(AccessToken(Zeroizing::new(r.access_token)))
    }

    /// `GET /metadata/v1/instance`.
    pub async fn instance(&self) -> Result<Instance, ClientError> {
        self.authorized_call(Operation::Instance, &()).await
    }

    async fn authorized_call<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        op: Operation,
        body: &B,
    ) -> Result<T, ClientError> {
        let headers = self
            .with_token(|t| {
                let mut h = HeaderMap::new();
                let mut value: reqwest::header::HeaderValue = format!("Bearer {}", t.expose())
                    .parse()
                    .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Bearer -"));
                value.set_sensitive(true);
                h.insert(AUTHORIZATION, value);
                h
            })
            .await?;
        self.call(op, headers, body).await
    }

    async fn call<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        op: Operation,
        mut headers: HeaderMap,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(op);
        let mut request = self.http.request(op.method(), &url);
        if op.method() != Method::GET {
            headers.insert(
                CONTENT_TYPE,
                "application/json".parse().expect("static header"),
            );
            let json = serde_json::to_vec(body).map_err(|e| ClientError::BadJson {
                op,
                url: url.clone(),
                detail: format!("cannot encode request: {e}"),
            })?;
            request = request.body(json);
        }
        let transport = |e: reqwest::Error| transport_error(op, &url, e);
        let mut response = request.headers(headers).send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_capped(&mut response, op, &url).await?;
        if !status.is_success() {
            return Err(ClientError::Status {
                op,
                url,
                status: status.as_u16(),
                message: error_message(status, &body),
                retry_after,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::BadJson {
            op,
            url,
            detail: e.to_string(),
        })
    }
}

async fn read_capped(
    response: &mut reqwest::Response,
    op: Operation,
    url: &str,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let too_large = || ClientError::TooLarge {
        op,
        url: url.to_string(),
        limit: BODY_LIMIT,
    };
    if response
        .content_length()
        .is_some_and(|n| n > BODY_LIMIT as u64)
    {
        return Err(too_large());
    }
    // Token responses carry the token: the raw body is wiped when dropped, like the token.
    // Reserved up front so that growing it leaves no stale copies behind.
    let expected = response.content_length().unwrap_or(16 * 1024) as usize;
    let mut body = Zeroizing::new(Vec::with_capacity(expected.min(BODY_LIMIT)));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(op, url, e))?
    {
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(op: Operation, url: &str, e: reqwest::Error) -> ClientError {
    let cause = error_chain(&e);
    let (failure, hint) = if e.is_timeout() {
        (
            "timed out",
            "the service did not answer within metadata.timeout; eit-certd retries with backoff",
        )
    } else if cause.contains("not valid for name") {
        (
            "could not verify the server",
            "the server's TLS certificate does not cover the host in metadata.endpoint: use the \
             name it was issued for, e.g. https://api.metadata.cloud.ibm.com",
        )
    } else if cause.contains("certificate") || cause.contains("UnknownIssuer") {
        (
            "could not verify the server",
            "the server's TLS certificate is not signed by a CA this host trusts: set \
             metadata.ca_file to the CA that signed it",
        )
    } else if e.is_connect() {
        (
            "could not connect",
            "check metadata.endpoint and that the metadata service is enabled for this instance",
        )
    } else if e.is_body() || e.is_decode() {
        (
            "broke off mid-response",
            "the connection was closed early; eit-certd retries with backoff",
        )
    } else {
        ("failed", "check metadata.endpoint and metadata.ca_file")
    };
    ClientError::Transport {
        op,
        url: url.to_string(),
        failure,
        cause,
        hint,
    }
}

/// The innermost causes of `e`, which say what actually happened (a certificate error, a
/// refused connection) where reqwest's own text only says "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    // reqwest's outer text repeats the URL, which the message already names.
    let mut parts: Vec<String> = Vec::new();
    let top = e.to_string();
    if !top.starts_with("error sending request") {
        parts.push(top);
    }
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

/// The IBM error body's `code: message` pairs, or a short excerpt of a non-JSON body.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        if !parsed.errors.is_empty() {
            return one_line(&parsed.summary());
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string();
    }
    let excerpt: String = text.chars().take(200).collect();
    let excerpt = excerpt.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "{} (non-JSON body: {excerpt:?})",
        status.canonical_reason().unwrap_or("")
    )
}

/// The service's own words made fit for a log line or an sd_notify `STATUS=`: control
/// characters and line breaks (which could forge a log line, or a `WATCHDOG=trigger` field)
/// become spaces, and the text is cut at 500 characters.
fn one_line(text: &str) -> String {
    const LIMIT: usize = 500;
    let head: String = text.chars().take(LIMIT).collect();
    let mut line = crate::text::one_line(&head);
    if text.chars().nth(LIMIT).is_some() {
        line.push('…');
    }
    line
}

/// `Retry-After` as delta-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = when - time::OffsetDateTime::now_utc();
    Some(delta.try_into().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn ibm_error_body_becomes_the_message() {
        let m = error_message(
            StatusCode::BAD_REQUEST,
            br#"{"errors":[{"code":"invalid_csr","message":"CN not allowed"}]}"#,
        );
        assert_eq!(m, "invalid_csr: CN not allowed");
        let m = error_message(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"<html><b>oops</b></html>",
        );
        assert!(
            m.contains("Internal Server Error") && m.contains("oops"),
            "{m}"
        );
    }

    #[test]
    fn service_error_text_cannot_add_lines() {
        let m = error_message(
            StatusCode::BAD_REQUEST,
            br#"{"errors":[{"code":"x","message":"no\nWATCHDOG=trigger\r\nREADY=1"}]}"#,
        );
        assert_eq!(m, "x: no WATCHDOG=trigger  READY=1");
        let long = format!(
            r#"{{"errors":[{{"code":"x","message":"{}"}}]}}"#,
            "a".repeat(5000)
        );
        let m = error_message(StatusCode::BAD_REQUEST, long.as_bytes());
        assert_eq!(m.chars().count(), 501);
        assert!(m.ends_with('…'));
    }

    #[test]
    fn permanence_follows_status() {
        let e = |status| ClientError::Status {
            op: Operation::Certificate,
            url: String::new(),
            status,
            message: String::new(),
            retry_after: None,
        };
        assert!(e(400).is_permanent());
        assert!(!e(401).is_permanent());
        assert!(!e(429).is_permanent());
        assert!(!e(503).is_permanent());
    }

    #[test]
    fn token_is_redacted() {
        let t = AccessToken(Zeroizing::new("very-secret".into()));
        assert_eq!(format!("{t:?}"), "AccessToken(<redacted>)");
    }

    #[tokio::test]
    async fn auto_takes_the_first_candidate_that_answers() {
        let emulator = crate::emulator::start(crate::emulator::Options::default())
            .await
            .unwrap();
        let config = MetadataConfig::default();
        // Nothing listens on port 1: refused at once, then the emulator answers.
        let chosen = Client::probe(&config, &["http://127.0.0.1:1", emulator.base_url()])
            .await
            .unwrap();
        assert_eq!(chosen.base_url(), emulator.base_url());
        let e = Client::probe(&config, &["http://127.0.0.1:1"])
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::NoEndpoint { .. }));
        assert!(e.to_string().contains("http://127.0.0.1:1"), "{e}");
        emulator.shutdown().await;
    }

    #[test]
    fn urls_carry_family_and_version() {
        let cfg = MetadataConfig {
            api: ApiFamily::InstanceIdentity,
            ..MetadataConfig::default()
        };
        let c = Client::new(&cfg, "http://127.0.0.1:9/").unwrap();
        assert_eq!(
            c.url(Operation::Certificate),
            "http://127.0.0.1:9/instance_identity/v1/certificates?version=2025-08-26"
        );
        assert!(!format!("{c:?}").contains("Bearer"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Bodies a hostile or broken service might send: anything, text, and JSON that is
        /// almost the right shape (wrong types, huge numbers, odd unicode, nesting).
        fn body() -> impl Strategy<Value = Vec<u8>> {
            let json_value = proptest::prop_oneof![
                Just("null".to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| format!("{n:e}")),
                Just("18446744073709551616".to_string()),
                Just("-1".to_string()),
                any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
                Just(r#"["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]"#.to_string()),
                Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".to_string()),
                Just(r#"{"code":"x","message":"y","more_info":null}"#.to_string()),
                Just(r#"[{"code":1,"message":["m"]}]"#.to_string()),
            ];
            let key = proptest::prop_oneof![
                Just("certificates"),
                Just("created_at"),
                Just("expires_at"),
                Just("expires_in"),
                Just("id"),
                Just("errors"),
                Just("trace"),
                Just("status_code"),
                Just("code"),
                Just("message"),
                Just("x"),
            ];
            let object = proptest::collection::vec((key, json_value), 0..8).prop_map(|fields| {
                let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", inner.join(",")).into_bytes()
            });
            // Any characters, control characters included (`any::<String>()` has none).
            let text =
                || proptest::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter);
            let errors = proptest::collection::vec((text(), text()), 0..4).prop_map(|items| {
                serde_json::json!({
                    "errors": items
                        .iter()
                        .map(|(c, m)| serde_json::json!({"code": c, "message": m}))
                        .collect::<Vec<_>>()
                })
                .to_string()
                .into_bytes()
            });
            proptest::prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..2000),
                any::<String>().prop_map(String::into_bytes),
                text().prop_map(String::into_bytes),
                // Long text: the excerpt is cut at 200 characters, whatever their width.
                ("[\\PC\\s]{150,400}").prop_map(String::into_bytes),
                object,
                errors,
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Parsing a response body never panics, whatever the body; error_message always
            /// returns one line without control characters (it ends up in log lines and in
            /// sd_notify's newline-separated `STATUS=`), of bounded length.
            #[test]
            fn response_parsing_never_panics(body in body(), status in 100u16..=999) {
                let _ = serde_json::from_slice::<CertificateResponse>(&body);
                let _ = serde_json::from_slice::<TokenResponse>(&body);
                let _ = serde_json::from_slice::<ErrorBody>(&body).map(|b| b.summary());
                let status = StatusCode::from_u16(status).unwrap();
                let message = error_message(status, &body);
                prop_assert!(!message.chars().any(char::is_control), "{message:?}");
                // An IBM error body: at most 500 characters and an ellipsis. Anything else: a
                // reason and a Debug-escaped excerpt of at most 200 characters (up to 10 each).
                prop_assert!(message.chars().count() <= 64 + 200 * 10, "{}", message.len());
            }
        }
    }
}
