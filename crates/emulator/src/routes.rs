//! The emulated metadata service API: token, certificate and IAM-token calls in both path
//! families, `GET /metadata/v1/instance`, and the middleware every API call passes through
//! (request log, fault gate, `version` check).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Extension;
use axum::{Json, Router};
use openssl::pkey::PKey;
use serde_json::json;

use super::api_error::ApiError;
use super::body::parse_json;
use super::csr::{CsrRejection, CsrView, ParsedCsr};
use super::faults::{ApiCall, Fault, SLOW_DELAY};
use super::journal::RequestRecord;
use super::misbehave;
use super::state::Shared;
use super::stop::stop_requested;
use super::tokens::{
    self, TokenProblem, DEFAULT_TOKEN_SECONDS, MAX_TOKEN_SECONDS, MIN_TOKEN_SECONDS,
};
use super::{clock, ids};
use crate::wire::{
    ApiFamily, CertificateRequest, CertificateResponse, IamTokenRequest, TokenRequest,
    TokenResponse, IDENTITY_ONLY_FROM, MIN_VERSION,
};

const DEFAULT_CERT_SECONDS: u64 = 3600;
const MAX_CERT_SECONDS: u64 = 86_400;
const IAM_TOKEN_SECONDS: u64 = 3600;

/// The API routes with their middleware, outermost first: request log, fault gate, and
/// (for matched routes only) the `version` check.
pub(crate) fn api_router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for family in [ApiFamily::Identity, ApiFamily::InstanceIdentity] {
        let prefix = family.prefix();
        router = router
            .route(&format!("{prefix}/token"), put(create_token))
            .route(&format!("{prefix}/certificates"), post(create_certificate))
            .route(&format!("{prefix}/iam_token"), post(create_iam_token));
    }
    router
        .route("/metadata/v1/instance", get(instance))
        .route_layer(middleware::from_fn(require_version))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), fault_gate))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

/// Logs and records every API call with the status it finally got.
async fn record(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    // The path only: the query holds nothing worth keeping, and tokens never travel in URLs.
    let path = req.uri().path().to_string();
    let at = clock::rfc3339(time::OffsetDateTime::now_utc());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    tracing::debug!(%method, %path, status, "metadata API call");
    shared.journal.push(RequestRecord {
        method,
        path,
        status,
        at,
        csr: response.extensions().get::<CsrView>().cloned(),
    });
    response
}

/// The one place API calls consult (and use up) the current fault; see `faults` for which
/// calls each mode applies to. Modes that replace the whole answer act here; the mode is also
/// left in the request extensions for the certificate handler, which spoils what it signs.
async fn fault_gate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let call = if is_certificate_call(req.method(), req.uri().path()) {
        ApiCall::Certificate
    } else {
        ApiCall::Other
    };
    let fault = shared.faults.take(call);
    req.extensions_mut().insert(fault);
    if let Some(answer) = misbehave::status_answer(fault) {
        return answer;
    }
    match fault {
        // A sleeping task holds no thread: other requests are served meanwhile. A stop
        // ends the wait, or a graceful shutdown would wait for it.
        Fault::Slow => {
            let mut stop = shared.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(SLOW_DELAY) => {}
                () = stop_requested(&mut stop) => {}
            }
            next.run(req).await
        }
        Fault::Reset => misbehave::cut_off(next.run(req).await).await,
        Fault::Token401 => {
            // As if revoked: the token stops working for every later call too.
            if let Some(token) = bearer_token(req.headers()) {
                shared.tokens().revoke(token);
            }
            misbehave::revoked_token()
        }
        Fault::RefuseCsr => ApiError::bad_request(
            "invalid_csr",
            "The certificate signing request was refused: its subject is not accepted for this \
             instance.",
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// `POST {family}/certificates`, in either family.
fn is_certificate_call(method: &Method, path: &str) -> bool {
    method == Method::POST
        && [ApiFamily::Identity, ApiFamily::InstanceIdentity]
            .iter()
            .any(|family| path.strip_prefix(family.prefix()) == Some("/certificates"))
}

async fn require_version(req: Request, next: Next) -> Response {
    match check_version(req.uri()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_version(uri: &Uri) -> Result<(), ApiError> {
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("The query string could not be parsed: {}", e.body_text()),
        )
    })?;
    let Some((_, version)) = params.iter().find(|(k, _)| k == "version") else {
        return Err(ApiError::bad_request(
            "missing_version",
            "The version query parameter is required; add ?version=YYYY-MM-DD \
             (for example ?version=2025-08-26).",
        ));
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    // Both are fixed-width YYYY-MM-DD once parsed, so comparing the strings compares dates.
    if time::Date::parse(version, &format).is_err() || version.as_str() < MIN_VERSION {
        return Err(ApiError::bad_request(
            "invalid_version",
            format!(
                "The version query parameter must be a date in YYYY-MM-DD format, \
                 {MIN_VERSION} or later; got {version:?}."
            ),
        ));
    }
    // From 2025-08-26 on the older family is gone (see the migration notes in the docs).
    let old_family = uri.path().starts_with(ApiFamily::InstanceIdentity.prefix());
    if old_family && version.as_str() >= IDENTITY_ONLY_FROM {
        return Err(ApiError::bad_request(
            "invalid_version",
            format!(
                "{} is not served at version {version}; from {IDENTITY_ONLY_FROM} on use \
                 {} (or an earlier version date).",
                ApiFamily::InstanceIdentity.prefix(),
                ApiFamily::Identity.prefix()
            ),
        ));
    }
    Ok(())
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "There is no {method} {}. The service answers PUT {{family}}/token, \
             POST {{family}}/certificates, POST {{family}}/iam_token (family /identity/v1 \
             or /instance_identity/v1) and GET /metadata/v1/instance.",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}.", uri.path()),
    )
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// Checks `Authorization: Bearer <token>` against the issued tokens.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = bearer_token(headers).ok_or_else(|| {
        ApiError::unauthorized(
            "invalid_token",
            "An Authorization: Bearer <token> header is required; get a token with \
             PUT /identity/v1/token.",
        )
    })?;
    match shared.tokens().check(token, clock::now()) {
        Ok(()) => Ok(()),
        Err(TokenProblem::Unknown) => Err(ApiError::unauthorized(
            "invalid_token",
            "The bearer token is not one this service issued; get a new one with \
             PUT /identity/v1/token.",
        )),
        Err(TokenProblem::Expired) => Err(ApiError::unauthorized(
            "expired_token",
            "The bearer token has expired; get a new one with PUT /identity/v1/token.",
        )),
    }
}

async fn create_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    let flavor = headers.get("metadata-flavor").and_then(|v| v.to_str().ok());
    if flavor != Some("ibm") {
        return Err(ApiError::bad_request(
            "missing_metadata_flavor",
            "The header Metadata-Flavor: ibm is required on token requests.",
        ));
    }
    let request: TokenRequest = parse_json(body)?.unwrap_or_default();
    let expires_in = request.expires_in.unwrap_or(DEFAULT_TOKEN_SECONDS);
    if !(MIN_TOKEN_SECONDS..=MAX_TOKEN_SECONDS).contains(&expires_in) {
        return Err(ApiError::bad_request(
            "invalid_expires_in",
            format!(
                "expires_in must be between {MIN_TOKEN_SECONDS} and {MAX_TOKEN_SECONDS} \
                 seconds; got {expires_in}."
            ),
        ));
    }
    let token = ids::identity_token().map_err(|e| ApiError::internal("create a token", &e))?;
    let created_at = clock::now();
    let expires_at = created_at + tokens::seconds(expires_in);
    shared
        .tokens()
        .insert(token.clone(), expires_at, created_at);
    Ok(Json(TokenResponse {
        access_token: token,
        created_at: clock::rfc3339(created_at),
        expires_at: clock::rfc3339(expires_at),
        expires_in,
    }))
}

/// Answers 201 with the chain, or an error; either way the CSR's view (when it could be
/// read) rides along in the response extensions for the request log. A certificate fault
/// mode (left in the extensions by `fault_gate`) spoils the answer once the request has
/// passed every check, so a bad request is still refused as the service would.
async fn create_certificate(
    State(shared): State<Arc<Shared>>,
    fault: Option<Extension<Fault>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let fault = fault.map_or(Fault::Ok, |Extension(f)| f);
    let parsed = authorize(&shared, &headers).and_then(|()| parse_json::<CertificateRequest>(body));
    let request = match parsed {
        Ok(Some(request)) => request,
        Ok(None) => {
            return ApiError::bad_request(
                "invalid_request_body",
                "The request body is empty; send {\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----...\"}.",
            )
            .into_response()
        }
        Err(e) => return e.into_response(),
    };
    let csr = match ParsedCsr::parse(&request.csr) {
        Ok(csr) => csr,
        Err(rejection) => return csr_error(rejection).into_response(),
    };
    let mut response = match issue_certificate(&shared, &csr, &request, fault) {
        Ok(answer) => answer,
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(csr.view().clone());
    response
}

fn issue_certificate(
    shared: &Shared,
    csr: &ParsedCsr,
    request: &CertificateRequest,
    fault: Fault,
) -> Result<Response, ApiError> {
    let requested = request.expires_in.unwrap_or(DEFAULT_CERT_SECONDS);
    if !(1..=MAX_CERT_SECONDS).contains(&requested) {
        return Err(ApiError::bad_request(
            "invalid_expires_in",
            format!(
                "expires_in must be between 1 and {MAX_CERT_SECONDS} seconds; got {requested}."
            ),
        ));
    }
    csr.validate().map_err(csr_error)?;
    if let Some(answer) = misbehave::canned_certificate_answer(fault) {
        return Ok(answer);
    }
    // A cap below one second would make an already-expired certificate.
    let cap = *shared
        .max_lifetime
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let lifetime = match cap {
        Some(cap) => requested.min(cap.as_secs().max(1)),
        None => requested,
    };
    let now = clock::now();
    let plan = misbehave::leaf_plan(fault, now, tokens::seconds(lifetime));
    let public_key = if plan.stranger_key {
        let stranger = shared
            .authority
            .stranger()
            .map_err(|e| ApiError::internal("make a stranger key", &e))?;
        PKey::public_key_from_der(
            &stranger
                .public_key_to_der()
                .map_err(|e| ApiError::internal("read the stranger key", &e))?,
        )
    } else {
        csr.request().public_key()
    }
    .map_err(|e| ApiError::internal("read the CSR key", &e))?;
    let leaf = shared
        .authority
        .issue_leaf(
            plan.signer,
            csr.request().subject_name(),
            &public_key,
            &shared.instance_id,
            plan.not_before,
            plan.lifetime,
        )
        .map_err(|e| ApiError::internal("sign the certificate", &e))?;
    let id = ids::uuid().map_err(|e| ApiError::internal("create a certificate id", &e))?;
    // The JSON tells the truth about the leaf, except under `short-lived`, where it claims
    // the lifetime that was granted while the leaf carries a quarter of it.
    let (created_at, expires_at) = match fault {
        Fault::ShortLived => (now, now + tokens::seconds(lifetime)),
        _ => (leaf.not_before, leaf.not_after),
    };
    let mut issued = CertificateResponse {
        certificates: misbehave::certificates(
            fault,
            leaf.pem,
            shared.authority.intermediate_pem().to_string(),
        ),
        created_at: clock::rfc3339(created_at),
        expires_at: clock::rfc3339(expires_at),
        expires_in: lifetime,
        id,
    };
    if fault == Fault::HostileText {
        misbehave::hostile_text(&mut issued);
    }
    Ok(misbehave::issued_answer(fault, &issued))
}

fn csr_error(rejection: CsrRejection) -> ApiError {
    ApiError::bad_request(rejection.code(), rejection.to_string())
}

async fn create_iam_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    authorize(&shared, &headers)?;
    let request: IamTokenRequest = parse_json(body)?.unwrap_or_default();
    let named = request.trusted_profile.is_some_and(|p| {
        let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
        given(&p.id) || given(&p.crn)
    });
    if !named {
        return Err(ApiError::bad_request(
            "missing_trusted_profile",
            "Name the trusted profile to use: {\"trusted_profile\": {\"id\": \"Profile-...\"}} \
             or {\"trusted_profile\": {\"crn\": \"crn:...\"}}.",
        ));
    }
    let token = ids::iam_token().map_err(|e| ApiError::internal("create an IAM token", &e))?;
    let created_at = clock::now();
    Ok(Json(TokenResponse {
        access_token: token,
        created_at: clock::rfc3339(created_at),
        expires_at: clock::rfc3339(created_at + tokens::seconds(IAM_TOKEN_SECONDS)),
        expires_in: IAM_TOKEN_SECONDS,
    }))
}

/// The documented `GET /metadata/v1/instance` sample, made to describe this instance.
async fn instance(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&shared, &headers)?;
    Ok(Json(instance_document(&shared.instance_id)))
}

fn instance_document(instance_id: &str) -> serde_json::Value {
    // Instance ids carry a zone prefix ("0717_"); the document's `id` is shown without it.
    let id = instance_id
        .split_once('_')
        .map_or(instance_id, |(_, rest)| rest);
    let crn_prefix = "crn:v1:bluemix:public:is:us-south-1:a/eit-certd-emulator";
    let volume = json!({
        "crn": format!("{crn_prefix}::volume:49c5d61b-41e7-4c01-9b7a-1a97366c6916"),
        "id": "49c5d61b-41e7-4c01-9b7a-1a97366c6916",
        "name": "eit-certd-emulator-boot"
    });
    let boot_attachment = json!({
        "id": "a8a15363-a6f7-4f01-af60-715e85b28141",
        "name": "eit-certd-emulator-boot-attachment",
        "volume": volume
    });
    let nic = json!({
        "id": "7ca88dfb-8962-469d-b1de-1dd56f4c3275",
        "name": "eit-certd-emulator-nic",
        "primary_ipv4_address": "10.0.0.32",
        "resource_type": "network_interface",
        "subnet": {
            "crn": format!("{crn_prefix}::subnet:bea6a632-5e13-42a4-b4b8-31dc877abfe4"),
            "id": "bea6a632-5e13-42a4-b4b8-31dc877abfe4",
            "name": "eit-certd-emulator-subnet",
            "resource_type": "subnet"
        }
    });
    json!({
        "boot_volume_attachment": boot_attachment,
        "created_at": "2021-10-19T16:11:57Z",
        "crn": format!("{crn_prefix}::instance:{instance_id}"),
        "disks": [],
        "id": id,
        "image": {
            "crn": format!("{crn_prefix}::image:9aaf3bcb-dcd7-4de7-bb60-24e39ff9d366"),
            "id": "9aaf3bcb-dcd7-4de7-bb60-24e39ff9d366",
            "name": "ibm-ubuntu-24-04-minimal-amd64"
        },
        "memory": 8,
        "name": "eit-certd-emulator",
        "network_interfaces": [nic],
        "primary_network_interface": nic,
        "profile": { "name": "bx2-2x8" },
        "resource_type": "instance",
        "vcpu": { "architecture": "amd64", "count": 2 },
        "volume_attachments": [boot_attachment],
        "vpc": {
            "crn": format!("{crn_prefix}::vpc:f0aae929-7047-46d1-92e1-9102b07a7f6f"),
            "id": "f0aae929-7047-46d1-92e1-9102b07a7f6f",
            "name": "eit-certd-emulator-vpc",
            "resource_type": "vpc"
        },
        "zone": { "name": "us-south-1" }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version_error(uri: &str) -> Option<&'static str> {
        check_version(&uri.parse().unwrap()).err().map(|e| e.code)
    }

    #[test]
    fn version_rules() {
        assert_eq!(version_error("/x?version=2022-03-01"), None);
        assert_eq!(version_error("/x?a=b&version=2025-08-26"), None);
        assert_eq!(version_error("/x"), Some("missing_version"));
        assert_eq!(
            version_error("/x?versions=2025-08-26"),
            Some("missing_version")
        );
        assert_eq!(
            version_error("/x?version=2022-02-28"),
            Some("invalid_version")
        );
        assert_eq!(
            version_error("/x?version=2025-8-26"),
            Some("invalid_version")
        );
        assert_eq!(
            version_error("/x?version=2025-02-30"),
            Some("invalid_version")
        );
        assert_eq!(version_error("/x?version=today"), Some("invalid_version"));
        assert_eq!(
            version_error("/instance_identity/v1/token?version=2025-08-26"),
            Some("invalid_version")
        );
        assert_eq!(
            version_error("/instance_identity/v1/token?version=2025-04-22"),
            None
        );
        assert_eq!(version_error("/identity/v1/token?version=2024-11-12"), None);
    }

    #[test]
    fn instance_document_shape() {
        let doc = instance_document("0717_eb1b7391-2ca2-4ab5-84a8-b92157a633b0");
        let parsed: crate::wire::Instance = serde_json::from_value(doc).unwrap();
        assert_eq!(parsed.id, "eb1b7391-2ca2-4ab5-84a8-b92157a633b0");
        assert_eq!(parsed.name, "eit-certd-emulator");
        assert_eq!(parsed.zone.name, "us-south-1");
        assert!(parsed
            .crn
            .ends_with("::instance:0717_eb1b7391-2ca2-4ab5-84a8-b92157a633b0"));
        assert_eq!(instance_document("plain")["id"], "plain");
    }
}
