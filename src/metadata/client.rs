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
    CertificateRequest, CertificateResponse, ErrorBody, IamTokenRequest, Instance, TokenRequest,
    TokenResponse, TrustedProfileRef,
};
use crate::config::{ApiFamily, Endpoint, MetadataConfig};

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

/// What went wrong below HTTP, classified from the error's causes by type (`io::Error`,
/// `rustls::Error`), never by their text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// No answer within `metadata.timeout`.
    Timeout,
    /// Nothing listens on the port (the connection was refused).
    Refused,
    /// Any other failure to connect (name resolution, no route).
    Connect,
    /// The server's certificate does not cover the host name in the URL.
    TlsName,
    /// The server's certificate does not verify against the trusted roots.
    TlsUntrusted,
    /// An https request was answered by something that does not speak TLS (plain http).
    NotTls,
    /// Any other TLS failure.
    Tls,
    /// The connection broke off mid-response.
    BrokenOff,
    Other,
}

impl TransportFailure {
    fn classify(e: &reqwest::Error) -> TransportFailure {
        if e.is_timeout() {
            return TransportFailure::Timeout;
        }
        for cause in causes(e) {
            if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
                return TransportFailure::from_tls(tls);
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return TransportFailure::Refused,
                    std::io::ErrorKind::TimedOut => return TransportFailure::Timeout,
                    _ => {}
                }
            }
        }
        if e.is_connect() {
            TransportFailure::Connect
        } else if e.is_body() || e.is_decode() {
            TransportFailure::BrokenOff
        } else {
            TransportFailure::Other
        }
    }

    fn from_tls(e: &rustls::Error) -> TransportFailure {
        use rustls::{CertificateError, Error, InvalidMessage};
        match e {
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => TransportFailure::TlsName,
            Error::InvalidCertificate(_) => TransportFailure::TlsUntrusted,
            Error::InvalidMessage(InvalidMessage::InvalidContentType)
            | Error::InvalidMessage(InvalidMessage::UnknownProtocolVersion) => {
                TransportFailure::NotTls
            }
            _ => TransportFailure::Tls,
        }
    }

    /// The words for the message: what failed, and what to do.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            TransportFailure::Timeout => (
                "timed out",
                "the service did not answer within metadata.timeout; eit-certd retries with backoff",
            ),
            TransportFailure::Refused => (
                "could not connect",
                "nothing answers there: check metadata.endpoint (http or https, and the port) and \
                 that the metadata service is enabled for this instance",
            ),
            TransportFailure::Connect => (
                "could not connect",
                "check metadata.endpoint and that the metadata service is enabled for this instance",
            ),
            TransportFailure::TlsName => (
                "could not verify the server",
                "the server's TLS certificate does not cover the host in metadata.endpoint: use the \
                 name it was issued for, e.g. https://api.metadata.cloud.ibm.com",
            ),
            TransportFailure::TlsUntrusted => (
                "could not verify the server",
                "the server's TLS certificate is not signed by a trusted CA: when metadata.ca_file \
                 is set, only that file is trusted and it holds the wrong CA (point it at the CA \
                 that signed the server's certificate); when it is not set, this host's CA roots \
                 do not cover the server (set metadata.ca_file to the CA that signed it)",
            ),
            TransportFailure::NotTls => (
                "got no TLS answer",
                "the server does not speak https on that port (a plain http server?): check the \
                 scheme in metadata.endpoint",
            ),
            TransportFailure::Tls => ("failed in the TLS handshake", "check metadata.endpoint"),
            TransportFailure::BrokenOff => (
                "broke off mid-response",
                "the connection was closed early; eit-certd retries with backoff",
            ),
            TransportFailure::Other => ("failed", "check metadata.endpoint and metadata.ca_file"),
        }
    }

    /// A failure that says the https endpoint is unusable because it could not be trusted
    /// (as opposed to not being there at all).
    pub fn is_verification(self) -> bool {
        matches!(
            self,
            TransportFailure::TlsName
                | TransportFailure::TlsUntrusted
                | TransportFailure::NotTls
                | TransportFailure::Tls
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "{what} to {url} {failure}: {cause}; {hint}",
        what = op.what(),
        failure = kind.describe().0,
        hint = kind.describe().1
    )]
    Transport {
        op: Operation,
        url: String,
        kind: TransportFailure,
        /// The innermost causes, for the reader (classification uses `kind`).
        cause: String,
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
    #[error(
        "endpoint = \"auto\": {https} is served but could not be trusted, so eit-certd does not \
         fall back to plain http (that would send the token in clear): {cause}. Fix the https \
         setup (metadata.ca_file), or set metadata.endpoint explicitly"
    )]
    AutoNotTrusted {
        https: String,
        cause: Box<ClientError>,
    },
    #[error("{what} to {url}: the service's access_token is empty or not a valid HTTP header value (it holds line breaks, control or non-ASCII characters); refusing to use it", what = op.what())]
    BadToken { op: Operation, url: String },
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
    /// The configured base URL, or `None` for `endpoint = "auto"`.
    fixed: Option<String>,
    /// What `auto` settled on; probed again at the next request until it settles.
    resolved: std::sync::Mutex<Option<String>>,
    family: ApiFamily,
    version: String,
    timeout: Duration,
    token_lifetime: Duration,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base_url())
            .field("family", &self.family)
            .field("version", &self.version)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Client {
    /// The client for `config`. With `endpoint = "auto"` nothing is probed yet: the first
    /// request probes (see `Client::resolve`), so a daemon starts while the service is away.
    pub fn connect(config: &MetadataConfig) -> Result<Client, ClientError> {
        match &config.endpoint {
            Endpoint::Url(url) => Client::new(config, url),
            Endpoint::Auto => Client::build(config, None, true),
        }
    }

    /// A client for one base URL, without probing.
    pub fn new(config: &MetadataConfig, base: &str) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        Client::build(config, Some(base), https)
    }

    fn build(
        config: &MetadataConfig,
        fixed: Option<String>,
        https: bool,
    ) -> Result<Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(false)
            .user_agent(concat!("eit-certd/", env!("CARGO_PKG_VERSION")))
            // Without https there is nothing to verify; don't fail on a host without CA roots.
            .tls_built_in_root_certs(https && config.ca_file.is_none());
        if let Some(path) = &config.ca_file {
            let ca_error = |reason: String| ClientError::CaFile {
                path: path.clone(),
                reason,
            };
            let pem = crate::files::read(
                path,
                crate::files::Links::Follow,
                crate::files::limit::CERTIFICATES,
            )
            .map_err(|e| ca_error(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ca_error(format!("not a PEM certificate bundle ({e})")))?;
            if certs.is_empty() {
                return Err(ca_error("it holds no PEM certificate".into()));
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
            fixed,
            resolved: std::sync::Mutex::new(None),
            family: config.api,
            version: config.version.to_string(),
            timeout: config.timeout.0,
            token_lifetime: config.token_lifetime.0,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The base URL in use: the configured one, what `auto` settled on, or `"auto"` before
    /// the first probe.
    pub fn base_url(&self) -> String {
        if let Some(base) = &self.fixed {
            return base.clone();
        }
        self.resolved
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
            .unwrap_or_else(|| "auto".to_string())
    }

    /// The base URL for the next request; for `auto`, probes [`AUTO_CANDIDATES`].
    async fn base(&self) -> Result<String, ClientError> {
        if let Some(base) = &self.fixed {
            return Ok(base.clone());
        }
        if let Some(base) = self.resolved.lock().ok().and_then(|r| r.clone()) {
            return Ok(base);
        }
        let base = self.resolve(&AUTO_CANDIDATES).await?;
        if let Ok(mut r) = self.resolved.lock() {
            *r = Some(base.clone());
        }
        Ok(base)
    }

    /// `endpoint = "auto"`: https first; plain http only when https is not served at all
    /// (the connection is refused). An https endpoint that answers but cannot be verified is
    /// an attack or a misconfiguration, never a reason to send the token in clear. The
    /// probe's token is kept for the request that follows.
    async fn resolve(&self, candidates: &[&str]) -> Result<String, ClientError> {
        let [https, rest @ ..] = candidates else {
            return Err(ClientError::NoEndpoint {
                detail: "no candidates".into(),
            });
        };
        let first = match self.probe_one(https).await {
            Ok(()) => {
                tracing::info!(endpoint = https, "endpoint = auto: using {https}");
                return Ok(https.to_string());
            }
            Err(e) => e,
        };
        match &first {
            ClientError::Transport {
                kind: TransportFailure::Refused,
                ..
            } => {}
            ClientError::Transport { kind, .. } if kind.is_verification() => {
                return Err(ClientError::AutoNotTrusted {
                    https: https.to_string(),
                    cause: Box::new(first),
                })
            }
            _ => return Err(first),
        }
        let mut errors = vec![format!("{https}: {first}")];
        for candidate in rest {
            match self.probe_one(candidate).await {
                Ok(()) => {
                    tracing::warn!(
                        endpoint = candidate,
                        "endpoint = auto: {https} is not served (connection refused); using \
                         {candidate}: the token travels unencrypted on the link-local network. \
                         Enable secure access (https) for the metadata service to avoid that"
                    );
                    return Ok(candidate.to_string());
                }
                Err(e) => errors.push(format!("{candidate}: {e}")),
            }
        }
        Err(ClientError::NoEndpoint {
            detail: errors.join("; "),
        })
    }

    /// A token request to `base`; the token is cached on success.
    async fn probe_one(&self, base: &str) -> Result<(), ClientError> {
        let started = Instant::now();
        let (token, lifetime) = self.request_token_at(base, self.token_lifetime).await?;
        self.cache(token, lifetime, started).await;
        Ok(())
    }

    async fn cache(&self, token: AccessToken, lifetime: Duration, started: Instant) {
        // Never start a request with a token that could expire before it completes.
        let margin = self.timeout * 2 + Duration::from_secs(5);
        *self.cached.lock().await = Some(CachedToken {
            token,
            usable_until: started
                .checked_add(lifetime.saturating_sub(margin))
                .unwrap_or(started),
        });
    }

    fn url(&self, base: &str, op: Operation) -> String {
        format!("{}{}?version={}", base, op.path(self.family), self.version)
    }

    /// A fresh token of `lifetime`, bypassing the cache (for `eit-certd token`).
    pub async fn new_token(&self, lifetime: Duration) -> Result<AccessToken, ClientError> {
        let base = self.base().await?;
        let (token, _) = self.request_token_at(&base, lifetime).await?;
        Ok(token)
    }

    /// A token and how long it may be used: the service's `expires_in`, but never longer than
    /// asked for (a service answering "forever" must not make us keep a token forever, nor
    /// overflow a clock).
    async fn request_token_at(
        &self,
        base: &str,
        lifetime: Duration,
    ) -> Result<(AccessToken, Duration), ClientError> {
        let body = TokenRequest {
            expires_in: Some(lifetime.as_secs()),
        };
        let mut headers = HeaderMap::new();
        headers.insert("Metadata-Flavor", "ibm".parse().expect("static header"));
        let r: TokenResponse = self.call(base, Operation::Token, headers, &body).await?;
        let token = AccessToken(Zeroizing::new(r.access_token.clone()));
        // The response struct's copy is dropped here; overwrite it first.
        drop(Zeroizing::new(r.access_token));
        let url = || self.url(base, Operation::Token);
        if token.expose().is_empty() {
            return Err(ClientError::BadJson {
                op: Operation::Token,
                url: url(),
                detail: "access_token is empty".into(),
            });
        }
        // It goes into a header: a token with a line break would otherwise be dropped or
        // replaced on the way and show up as a puzzling 401.
        if !is_header_token(token.expose()) {
            return Err(ClientError::BadToken {
                op: Operation::Token,
                url: url(),
            });
        }
        Ok((token, Duration::from_secs(r.expires_in).min(lifetime)))
    }

    /// Runs `f` with a cached token, fetching one if there is none usable.
    async fn with_token<T>(
        &self,
        base: &str,
        f: impl FnOnce(&AccessToken) -> T,
    ) -> Result<T, ClientError> {
        let usable =
            matches!(&*self.cached.lock().await, Some(c) if Instant::now() < c.usable_until);
        if !usable {
            let started = Instant::now();
            let (token, lifetime) = self.request_token_at(base, self.token_lifetime).await?;
            self.cache(token, lifetime, started).await;
        }
        let cached = self.cached.lock().await;
        match cached.as_ref() {
            Some(c) => Ok(f(&c.token)),
            // Cannot happen (filled above, under no other writer); fail rather than panic.
            None => Err(ClientError::NoEndpoint {
                detail: "no token".into(),
            }),
        }
    }

    /// A token for callers that need one (`token` command, probing); goes through the cache.
    pub async fn token(&self) -> Result<(), ClientError> {
        let base = self.base().await?;
        self.with_token(&base, |_| ()).await
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
        let token = AccessToken(Zeroizing::new(r.access_token));
        // The same rule as the identity token: it is printed for scripts that put it in a
        // header, and a control character would reach their terminal or their request.
        if token.expose().is_empty() || !is_header_token(token.expose()) {
            let base = self.base().await?;
            return Err(ClientError::BadToken {
                op: Operation::IamToken,
                url: self.url(&base, Operation::IamToken),
            });
        }
        Ok(token)
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
        let base = self.base().await?;
        let headers = self
            .with_token(&base, |t| {
                let mut h = HeaderMap::new();
                // Checked when the token arrived (is_header_token), so this cannot fail.
                if let Ok(mut value) =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                {
                    value.set_sensitive(true);
                    h.insert(AUTHORIZATION, value);
                }
                h
            })
            .await?;
        self.call(&base, op, headers, body).await
    }

    async fn call<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        base: &str,
        op: Operation,
        mut headers: HeaderMap,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(base, op);
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
            // serde's message quotes the offending value, which the service controls.
            detail: crate::text::bounded(&e.to_string(), 200),
        })
    }
}

/// A token usable as is in `Authorization: Bearer …`: visible ASCII only.
fn is_header_token(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_graphic())
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
    ClientError::Transport {
        op,
        url: url.to_string(),
        kind: TransportFailure::classify(&e),
        cause: error_chain(&e),
    }
}

/// `e` and its causes, outermost first. An `io::Error` is looked into: its `source()` skips
/// the error it wraps (and the TLS layer wraps a `rustls::Error` in two of them).
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |cause| {
        match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        }
    })
}

/// The innermost cause of `e`, which says what actually happened (a certificate error, a
/// refused connection) where reqwest's own text only says "error sending request for url".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let innermost = causes(e).last().unwrap_or(e);
    crate::text::bounded(&innermost.to_string(), 500)
}

/// The IBM error body's `code: message` pairs, or a short excerpt of a non-JSON body.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        if !parsed.errors.is_empty() {
            return crate::text::bounded(&parsed.summary(), 500);
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

/// `Retry-After` as delta-seconds or an HTTP-date (any of the three formats HTTP allows).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
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
        // The other two formats HTTP allows for dates.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:00 2015"),
            Some(Duration::ZERO)
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
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
        assert!(!is_header_token("abc\r\nX-Injected: 1"));
        assert!(!is_header_token("t\u{e9}"));
        assert!(is_header_token("eyJhbGciOi.J9-_x"));
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

    fn auto_client() -> Client {
        let config = MetadataConfig {
            endpoint: Endpoint::Auto,
            ..MetadataConfig::default()
        };
        Client::connect(&config).unwrap()
    }

    #[tokio::test]
    async fn auto_falls_back_to_http_only_when_https_is_refused() {
        let emulator = eit_certd_emulator::start(eit_certd_emulator::Options::default())
            .await
            .unwrap();
        // Nothing listens on port 1: refused at once, then the emulator answers.
        let chosen = auto_client()
            .resolve(&["https://127.0.0.1:1", emulator.base_url()])
            .await
            .unwrap();
        assert_eq!(chosen, emulator.base_url());
        let e = auto_client()
            .resolve(&["https://127.0.0.1:1", "http://127.0.0.1:1"])
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::NoEndpoint { .. }));
        assert!(e.to_string().contains("http://127.0.0.1:1"), "{e}");
        emulator.shutdown().await;
    }

    #[tokio::test]
    async fn auto_never_downgrades_when_https_cannot_be_verified() {
        let tls = eit_certd_emulator::start(eit_certd_emulator::Options {
            tls: true,
            ..eit_certd_emulator::Options::default()
        })
        .await
        .unwrap();
        let plain = eit_certd_emulator::start(eit_certd_emulator::Options::default())
            .await
            .unwrap();
        // The emulator's CA is in no trust store here: verification fails.
        let e = auto_client()
            .resolve(&[tls.base_url(), plain.base_url()])
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::AutoNotTrusted { .. }), "{e}");
        assert!(e.to_string().contains("does not fall back"), "{e}");
        // A plain http server on the https candidate: not TLS, so no fallback either.
        let e = auto_client()
            .resolve(&[
                &plain.base_url().replace("http://", "https://"),
                plain.base_url(),
            ])
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::AutoNotTrusted { .. }), "{e}");
        assert!(e.to_string().contains("does not speak https"), "{e}");
        tls.shutdown().await;
        plain.shutdown().await;
    }

    #[tokio::test]
    async fn transport_failures_are_classified_by_type() {
        let tls = eit_certd_emulator::start(eit_certd_emulator::Options {
            tls: true,
            ..eit_certd_emulator::Options::default()
        })
        .await
        .unwrap();
        let config = MetadataConfig::default();
        let kind = |e: ClientError| match e {
            ClientError::Transport { kind, .. } => kind,
            other => panic!("{other}"),
        };
        let refused = Client::new(&config, "http://127.0.0.1:1").unwrap();
        assert_eq!(
            kind(refused.token().await.unwrap_err()),
            TransportFailure::Refused
        );
        let untrusted = Client::new(&config, tls.base_url()).unwrap();
        assert_eq!(
            kind(untrusted.token().await.unwrap_err()),
            TransportFailure::TlsUntrusted
        );
        tls.shutdown().await;
    }

    #[test]
    fn urls_carry_family_and_version() {
        let cfg = MetadataConfig {
            api: ApiFamily::InstanceIdentity,
            ..MetadataConfig::default()
        };
        let c = Client::new(&cfg, "http://127.0.0.1:9/").unwrap();
        assert_eq!(
            c.url(&c.base_url(), Operation::Certificate),
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
