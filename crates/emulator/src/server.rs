//! Assembling the whole application and serving it over plain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::body::BODY_LIMIT;
use super::control::control_router;
use super::routes::api_router;
use super::state::Shared;
use super::stop::stop_requested;

/// Control endpoints first; everything else is an API call.
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    control_router(shared.clone())
        .fallback_service(api_router(shared))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

pub(crate) async fn serve_http(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(async move { stop_requested(&mut stop).await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "emulator HTTP server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Over a real socket every peer is loopback; only the router, handed a peer address,
    // can show the refusal of a remote one.
    #[tokio::test]
    async fn control_endpoints_refuse_remote_peers() {
        use axum::body::Body;
        use axum::extract::ConnectInfo;
        use tower::ServiceExt;

        let emu = crate::start(crate::Options::default()).await.unwrap();
        let app = app(emu.shared.clone());
        let request = |peer: Option<SocketAddr>| {
            let mut req = axum::http::Request::get("/emulator/v1/requests")
                .body(Body::empty())
                .unwrap();
            if let Some(peer) = peer {
                req.extensions_mut().insert(ConnectInfo(peer));
            }
            req
        };
        let remote = app
            .clone()
            .oneshot(request(Some("10.1.2.3:4000".parse().unwrap())))
            .await
            .unwrap();
        assert_eq!(remote.status(), axum::http::StatusCode::FORBIDDEN);
        let unknown = app.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(unknown.status(), axum::http::StatusCode::FORBIDDEN);
        let mapped = app
            .oneshot(request(Some("[::ffff:127.0.0.1]:4000".parse().unwrap())))
            .await
            .unwrap();
        assert_eq!(mapped.status(), axum::http::StatusCode::OK);
    }
}
