//! What each [`Fault`] mode does to an answer. `routes` decides *when* a mode applies (see
//! `faults` for which calls that is); this module holds *what* it sends instead: the error
//! answers, the bodies that break off or never end, and the ways a certificate set is spoiled.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use time::OffsetDateTime;

use super::api_error::ApiError;
use super::ca::Signer;
use super::faults::Fault;
use crate::wire::CertificateResponse;

/// The documented sample answer (`doc-sample`), byte for byte.
pub(crate) const DOC_SAMPLE: &str = include_str!("../data/sample-certificates-response.json");

/// What `extra-garbage` appends to `certificates`.
pub(crate) const GARBAGE_ELEMENT: &str = "this is not a certificate";

/// What `garbage-pem` puts inside the intermediate's armour: valid base64 of bytes that are
/// not DER (DER would start with 0x30, a SEQUENCE).
const GARBAGE_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
     VGhpcyBpcyBub3QgREVSLCBqdXN0IHRleHQgaW5zaWRlIFBFTSBhcm1vdXIuCg==\n\
     -----END CERTIFICATE-----\n";

/// Size of the `huge` body: about 300 MB, far beyond any sane client's cap.
pub(crate) const HUGE_BODY_BYTES: u64 = 300 * 1000 * 1000;

/// How far ahead `not-yet-valid` starts the leaf, and how long ago `expired` ended it.
const VALIDITY_SHIFT: time::Duration = time::Duration::hours(1);

/// The answer for the status modes (`status-503`, `status-429`, `html-500`), which replace
/// the whole answer; `None` for every other mode.
pub(crate) fn status_answer(fault: Fault) -> Option<Response> {
    let with_retry_after = |error: ApiError, seconds: &'static str| {
        let mut response = error.into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(seconds));
        response
    };
    match fault {
        Fault::Status503 => Some(with_retry_after(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "The metadata service is temporarily unavailable; try again later.",
            ),
            "2",
        )),
        Fault::Status429 => Some(with_retry_after(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too many requests to the metadata service; retry after the Retry-After delay.",
            ),
            "1",
        )),
        Fault::Html500 => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>\n\
                 <body><h1>Internal Server Error</h1>\n<p>The server encountered an internal \
                 error and was unable to complete your request.</p></body></html>\n",
            )
                .into_response(),
        ),
        _ => None,
    }
}

/// `token-401`: what the service says about a token that was revoked.
pub(crate) fn revoked_token() -> Response {
    ApiError::unauthorized(
        "invalid_token",
        "The bearer token is not valid (it may have been revoked); get a new one with \
         PUT /identity/v1/token.",
    )
    .into_response()
}

/// `reset`: sends `response`'s status, headers and the first half of its body with a
/// Content-Length for all of it, then closes the connection.
pub(crate) async fn cut_off(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    // Every answer the emulator makes outside `huge` is a few KiB.
    let bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    let promised = bytes.len().max(1);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(promised));
    let half = bytes.slice(..bytes.len() / 2);
    Response::from_parts(parts, Body::new(BreaksOff::new(half)))
}

/// A body that yields its bytes, lets the server flush them, and then fails, which makes
/// hyper drop the connection short of the promised Content-Length.
struct BreaksOff {
    part: Option<Bytes>,
    yielded: bool,
}

impl BreaksOff {
    fn new(part: Bytes) -> Self {
        BreaksOff {
            part: Some(part).filter(|b| !b.is_empty()),
            yielded: false,
        }
    }
}

impl hyper::body::Body for BreaksOff {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(part) = this.part.take() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        if !this.yielded {
            // hyper buffers what it has and polls the body again at once; failing now would
            // drop the buffer unsent. Pending once makes it flush the head and the part first.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulated connection reset (fault mode reset)",
        ))))
    }
}

/// `huge` and `doc-sample`: answers that do not depend on the CSR; `None` for other modes.
pub(crate) fn canned_certificate_answer(fault: Fault) -> Option<Response> {
    match fault {
        Fault::Huge => Some(
            (
                StatusCode::CREATED,
                [(CONTENT_TYPE, "application/json")],
                Body::new(Endless::new(HUGE_BODY_BYTES)),
            )
                .into_response(),
        ),
        Fault::DocSample => Some(
            (
                StatusCode::CREATED,
                [(CONTENT_TYPE, "application/json")],
                DOC_SAMPLE,
            )
                .into_response(),
        ),
        _ => None,
    }
}

/// A JSON-looking body of `total` bytes made up on the fly from one static chunk, so that
/// sending 300 MB costs no memory. It announces no length (chunked encoding): a client has to
/// count what it reads to stop early.
struct Endless {
    sent: u64,
    total: u64,
}

const ENDLESS_HEAD: &[u8] = b"{\"certificates\":[\"-----BEGIN CERTIFICATE-----\\n";
const ENDLESS_TAIL: &[u8] = b"\\n-----END CERTIFICATE-----\\n\"]}";
static FILLER: [u8; 64 * 1024] = [b'A'; 64 * 1024];

impl Endless {
    fn new(total: u64) -> Self {
        let overhead = (ENDLESS_HEAD.len() + ENDLESS_TAIL.len()) as u64;
        Endless {
            sent: 0,
            total: total.max(overhead),
        }
    }
}

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let tail_starts = this.total - ENDLESS_TAIL.len() as u64;
        let chunk = if this.sent == 0 {
            Bytes::from_static(ENDLESS_HEAD)
        } else if this.sent < tail_starts {
            let n = (tail_starts - this.sent).min(FILLER.len() as u64);
            // n <= FILLER.len(), so the cast cannot truncate.
            Bytes::from_static(&FILLER[..n as usize])
        } else if this.sent < this.total {
            Bytes::from_static(ENDLESS_TAIL)
        } else {
            return Poll::Ready(None);
        };
        this.sent += chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// How the leaf of a certificate call is to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeafPlan {
    pub not_before: OffsetDateTime,
    pub lifetime: time::Duration,
    pub signer: Signer,
    /// Certify the stranger key instead of the CSR's (`wrong-key`).
    pub stranger_key: bool,
}

/// The leaf `fault` calls for, for a request granted `lifetime` at `now`.
pub(crate) fn leaf_plan(fault: Fault, now: OffsetDateTime, lifetime: time::Duration) -> LeafPlan {
    let honest = LeafPlan {
        not_before: now,
        lifetime,
        signer: Signer::Intermediate,
        stranger_key: false,
    };
    match fault {
        Fault::Expired => LeafPlan {
            not_before: now - VALIDITY_SHIFT - lifetime,
            ..honest
        },
        Fault::NotYetValid => LeafPlan {
            not_before: now + VALIDITY_SHIFT,
            ..honest
        },
        Fault::ShortLived => LeafPlan {
            // Whole seconds, at least one: a certificate cannot say less.
            lifetime: time::Duration::seconds((lifetime.whole_seconds() / 4).max(1)),
            ..honest
        },
        Fault::BadSignature => LeafPlan {
            signer: Signer::Stranger,
            ..honest
        },
        Fault::WrongKey => LeafPlan {
            stranger_key: true,
            ..honest
        },
        _ => honest,
    }
}

/// The `certificates` array `fault` calls for, from an issued leaf and the intermediate.
pub(crate) fn certificates(fault: Fault, leaf: String, intermediate: String) -> Vec<String> {
    match fault {
        Fault::NoIntermediate => vec![leaf],
        Fault::ExtraGarbage => vec![leaf, intermediate, GARBAGE_ELEMENT.to_string()],
        Fault::GarbagePem => vec![leaf, GARBAGE_PEM.to_string()],
        Fault::WrongOrder => vec![intermediate, leaf],
        _ => vec![leaf, intermediate],
    }
}

/// `hostile-text`: the set stays sound; the text fields a client only shows or logs carry
/// what must never reach a terminal or a log raw.
pub(crate) fn hostile_text(issued: &mut CertificateResponse) {
    issued.expires_at = format!(
        "{}\u{1b}[2J\u{1b}[31m\nINFO eit_certd: forged line\r\n{}",
        issued.expires_at,
        "x".repeat(200_000)
    );
    issued.created_at = "\u{1b}]0;title\u{7}\u{0}".to_string();
    issued.id = format!("{}\n{}", issued.id, "y".repeat(200_000));
}

/// The 201 answer for an issued set: the JSON, or for `truncated` its first half.
pub(crate) fn issued_answer(fault: Fault, issued: &CertificateResponse) -> Response {
    let json = match serde_json::to_vec(issued) {
        Ok(json) => json,
        Err(e) => return ApiError::internal("encode the answer", &e).into_response(),
    };
    let json = match fault {
        Fault::Truncated => json[..json.len() / 2].to_vec(),
        _ => json,
    };
    (
        StatusCode::CREATED,
        [(CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    struct NoWake;

    impl std::task::Wake for NoWake {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    type Polled<B> = Poll<Option<Result<Frame<Bytes>, <B as hyper::body::Body>::Error>>>;

    fn poll<B: hyper::body::Body<Data = Bytes> + Unpin>(body: &mut B) -> Polled<B> {
        let waker = std::task::Waker::from(std::sync::Arc::new(NoWake));
        Pin::new(body).poll_frame(&mut Context::from_waker(&waker))
    }

    #[test]
    fn endless_body_is_exactly_as_long_as_asked_and_json_shaped() {
        let mut body = Endless::new(200_000);
        assert!(body.size_hint().exact().is_none(), "no length is announced");
        let mut all = Vec::new();
        while let Poll::Ready(Some(frame)) = poll(&mut body) {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= FILLER.len());
            all.extend_from_slice(&data);
        }
        assert_eq!(all.len(), 200_000);
        assert!(all.starts_with(ENDLESS_HEAD));
        assert!(all.ends_with(ENDLESS_TAIL));
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn breaking_body_yields_its_part_then_fails() {
        let mut body = BreaksOff::new(Bytes::from_static(b"{\"half"));
        let first = match poll(&mut body) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
            _ => panic!("expected the part first"),
        };
        assert_eq!(&first[..], b"{\"half");
        assert!(poll(&mut body).is_pending(), "lets the server flush");
        match poll(&mut body) {
            Poll::Ready(Some(Err(e))) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset)
            }
            _ => panic!("expected the failure"),
        }
    }

    #[test]
    fn leaf_plans() {
        let now = time::macros::datetime!(2025-06-10 11:00:00 UTC);
        let hour = time::Duration::hours(1);
        let plan = |f| leaf_plan(f, now, hour);
        assert_eq!(plan(Fault::Ok).not_before, now);
        assert_eq!(plan(Fault::Ok).lifetime, hour);
        let expired = plan(Fault::Expired);
        assert_eq!(expired.not_before + expired.lifetime, now - VALIDITY_SHIFT);
        assert_eq!(plan(Fault::NotYetValid).not_before, now + hour);
        assert_eq!(
            plan(Fault::ShortLived).lifetime,
            time::Duration::minutes(15)
        );
        assert_eq!(
            leaf_plan(Fault::ShortLived, now, time::Duration::seconds(2)).lifetime,
            time::Duration::seconds(1)
        );
        assert_eq!(plan(Fault::BadSignature).signer, Signer::Stranger);
        assert!(plan(Fault::WrongKey).stranger_key);
        assert!(!plan(Fault::Ok).stranger_key);
    }

    #[test]
    fn certificate_arrays() {
        let arr = |f| certificates(f, "L".into(), "I".into());
        assert_eq!(arr(Fault::Ok), ["L", "I"]);
        assert_eq!(arr(Fault::NoIntermediate), ["L"]);
        assert_eq!(arr(Fault::ExtraGarbage), ["L", "I", GARBAGE_ELEMENT]);
        assert_eq!(arr(Fault::WrongOrder), ["I", "L"]);
        let garbage = arr(Fault::GarbagePem);
        assert_eq!(garbage[0], "L");
        let (_, pem) = x509_parser::pem::parse_x509_pem(garbage[1].as_bytes()).unwrap();
        assert_eq!(pem.label, "CERTIFICATE");
        assert_ne!(pem.contents[0], 0x30, "not a DER SEQUENCE");
    }
}
