//! The emulator's own control endpoints under `/emulator/v1/`: set the fault mode, read the
//! request log. Only loopback peers may use them, and they are neither recorded nor
//! subject to faults.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::api_error::ApiError;
use super::body::parse_json;
use super::faults::{Fault, FaultState};
use super::journal::RequestRecord;
use super::state::Shared;

pub(crate) fn control_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/emulator/v1/fault", get(show_fault).put(set_fault))
        .route("/emulator/v1/requests", get(list_requests))
        .layer(middleware::from_fn(loopback_only))
        .with_state(shared)
}

/// Refuses peers that are not on this host. The peer address is put in the request
/// extensions by the HTTP and HTTPS servers alike; a request without one is refused too.
async fn loopback_only(req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    tracing::debug!(method = %req.method(), path = %req.uri().path(), ?peer, "control call");
    match peer {
        Some(addr) if addr.ip().to_canonical().is_loopback() => next.run(req).await,
        _ => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The /emulator/v1/ control endpoints accept connections from loopback only.",
        )
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    mode: String,
    /// For how many of the calls the mode applies to (see `faults`); absent: until changed.
    #[serde(default)]
    count: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FaultStatus {
    pub mode: String,
    /// Calls the mode still applies to (certificate modes: certificate calls only);
    /// `null`: until changed.
    pub remaining: Option<u32>,
    pub modes: Vec<ModeInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ModeInfo {
    pub name: String,
    pub description: String,
}

impl From<FaultState> for FaultStatus {
    fn from(state: FaultState) -> Self {
        FaultStatus {
            mode: state.mode.to_string(),
            remaining: state.remaining,
            modes: Fault::ALL
                .iter()
                .map(|f| ModeInfo {
                    name: f.to_string(),
                    description: f.description().to_string(),
                })
                .collect(),
        }
    }
}

async fn show_fault(State(shared): State<Arc<Shared>>) -> Json<FaultStatus> {
    Json(shared.faults.peek().into())
}

async fn set_fault(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FaultStatus>, ApiError> {
    let request: FaultRequest = parse_json(body)?.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request_body",
            "Send {\"mode\": \"<mode>\", \"count\": <calls, optional>}.",
        )
    })?;
    let mode: Fault = request
        .mode
        .parse()
        .map_err(|e: super::faults::UnknownFault| {
            ApiError::bad_request("invalid_fault_mode", format!("{e}."))
        })?;
    shared.faults.set(mode, request.count);
    tracing::info!(%mode, count = ?request.count, "fault mode set");
    Ok(Json(shared.faults.peek().into()))
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Json<Vec<RequestRecord>> {
    Json(shared.journal.snapshot())
}
