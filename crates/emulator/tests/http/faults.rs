//! The fault modes over real HTTP: what each sends, which calls it hits, and what uses up its
//! count. (What eit-certd makes of them is in `tests/it/faults.rs`.)

use std::time::{Duration, Instant};

use openssl::x509::X509;
use reqwest::StatusCode;
use serde_json::json;

use eit_certd_emulator::wire::CertificateResponse;
use eit_certd_emulator::{Fault, Running};

use super::{
    client, error_of, get_token, make_csr, parse_time, post_csr, start_default, test_key,
    FaultStatus, JsonBody, ParseJson, VERSION,
};

const FAMILY: &str = "/identity/v1";
/// What `doc-sample` answers: the documented sample, byte for byte (`misbehave::DOC_SAMPLE`).
const DOC_SAMPLE: &str = include_str!("../../data/sample-certificates-response.json");
/// What `extra-garbage` appends (`misbehave::GARBAGE_ELEMENT`, private to the crate).
const GARBAGE_ELEMENT: &str = "this is not a certificate";

/// The fault mode and its remaining count, as the control endpoint reports them.
async fn fault_state(emu: &Running) -> (String, Option<u32>) {
    let state: FaultStatus = client()
        .get(format!("{}/emulator/v1/fault", emu.base_url()))
        .send()
        .await
        .unwrap()
        .parse()
        .await;
    (state.mode, state.remaining)
}

/// The intermediate CA certificate (PEM) as the emulator sends it in an ordinary set.
async fn intermediate_pem(emu: &Running) -> String {
    let resp = certificate_call(emu).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let set: CertificateResponse = resp.parse().await;
    set.certificates[1].clone()
}

fn csr() -> String {
    make_csr(test_key(), &[("C", "US"), ("O", "Test")], false)
}

/// A token (not subject to certificate modes) and one certificate call with it.
async fn certificate_call(emu: &Running) -> reqwest::Response {
    let c = client();
    let token = get_token(&c, emu.base_url(), FAMILY).await;
    post_csr(&c, emu.base_url(), FAMILY, &token, json!({ "csr": csr() })).await
}

/// The set issued under `fault` (applied to one certificate call).
async fn issued_under(emu: &Running, fault: Fault) -> CertificateResponse {
    emu.set_fault(fault, Some(1));
    let resp = certificate_call(emu).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "{fault}");
    let issued = resp.parse().await;
    assert_eq!(
        fault_state(emu).await.0,
        Fault::Ok.name(),
        "{fault}: used up"
    );
    issued
}

fn x509(pem: &str) -> X509 {
    X509::from_pem(pem.as_bytes()).unwrap()
}

fn unix(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).unwrap();
    let d = epoch.diff(t).unwrap();
    i64::from(d.days) * 86_400 + i64::from(d.secs)
}

#[tokio::test]
async fn status_modes_answer_every_call_and_count_each() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();
    let token_url = format!("{base}{FAMILY}/token?{VERSION}");
    let put_token = || c.put(&token_url).header("Metadata-Flavor", "ibm").send();

    emu.set_fault(Fault::Status503, Some(2));
    let resp = put_token().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "2");
    let (status, code, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (503, "service_unavailable"));
    // The certificate call is hit too (and refused before the token is even looked at).
    let resp = post_csr(&c, base, FAMILY, "whatever", json!({ "csr": csr() })).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        put_token().await.unwrap().status(),
        StatusCode::OK,
        "used up"
    );

    emu.set_fault(Fault::Status429, Some(1));
    let resp = put_token().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "1");
    let (status, code, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (429, "too_many_requests"));

    emu.set_fault(Fault::Html500, Some(1));
    let resp = put_token().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("<h1>Internal Server Error</h1>"));

    let statuses: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200, 429, 500], "all recorded");
    assert_eq!(put_token().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn reset_breaks_off_after_the_head_and_half_the_body() {
    let emu = start_default().await;
    emu.set_fault(Fault::Reset, Some(1));
    let resp = client()
        .put(format!("{}{FAMILY}/token?{VERSION}", emu.base_url()))
        .header("Metadata-Flavor", "ibm")
        .send()
        .await
        .expect("the head arrives");
    assert_eq!(resp.status(), StatusCode::OK);
    let promised = resp.content_length().unwrap();
    assert!(promised > 100, "{promised}");
    let err = resp.bytes().await.unwrap_err();
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    assert_eq!(emu.requests()[0].status, 200);
    // The server survives, and the count is used up.
    let c = client();
    get_token(&c, emu.base_url(), FAMILY).await;
}

#[tokio::test]
async fn slow_holds_back_its_call_without_blocking_others() {
    let emu = start_default().await;
    emu.set_fault(Fault::Slow, Some(1));
    let url = format!("{}{FAMILY}/token?{VERSION}", emu.base_url());
    let slow = tokio::spawn({
        let url = url.clone();
        async move {
            client()
                .put(url)
                .header("Metadata-Flavor", "ibm")
                .timeout(Duration::from_secs(30))
                .send()
                .await
        }
    });
    // Wait (with a deadline) until the slow call has taken the fault.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fault_state(&emu).await.0 != Fault::Ok.name() {
        assert!(Instant::now() < deadline, "the slow call never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let c = client();
    get_token(&c, emu.base_url(), FAMILY).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!slow.is_finished(), "the slow call is still waiting");
    // Nor does it hold up a shutdown (which lets open requests finish).
    tokio::time::timeout(Duration::from_secs(10), emu.shutdown())
        .await
        .expect("shutdown waited for the slow call");
    let answered = slow.await.unwrap().unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
}

#[tokio::test]
async fn certificate_modes_leave_token_calls_alone_and_uncounted() {
    let emu = start_default().await;
    let c = client();
    emu.set_fault(Fault::Expired, Some(1));
    let first = get_token(&c, emu.base_url(), FAMILY).await;
    let _second = get_token(&c, emu.base_url(), FAMILY).await;
    assert_eq!(
        fault_state(&emu).await,
        (Fault::Expired.name().to_string(), Some(1)),
        "token calls use up nothing"
    );
    let resp = post_csr(&c, emu.base_url(), FAMILY, &first, json!({ "csr": csr() })).await;
    let spoiled: CertificateResponse = resp.parse().await;
    let leaf = x509(&spoiled.certificates[0]);
    assert!(leaf.not_after() < openssl::asn1::Asn1Time::days_from_now(0).unwrap());
    let resp = post_csr(&c, emu.base_url(), FAMILY, &first, json!({ "csr": csr() })).await;
    let fine: CertificateResponse = resp.parse().await;
    let leaf = x509(&fine.certificates[0]);
    assert!(leaf.not_after() > openssl::asn1::Asn1Time::days_from_now(0).unwrap());
}

#[tokio::test]
async fn token_401_answers_as_if_the_token_was_revoked() {
    let emu = start_default().await;
    let c = client();
    emu.set_fault(Fault::Token401, Some(1));
    let token = get_token(&c, emu.base_url(), FAMILY).await;
    let body = json!({ "csr": csr() });
    let resp = post_csr(&c, emu.base_url(), FAMILY, &token, body.clone()).await;
    let (status, code, _) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    // Used up, but the token stays revoked; a new one works.
    let resp = post_csr(&c, emu.base_url(), FAMILY, &token, body.clone()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let token = get_token(&c, emu.base_url(), FAMILY).await;
    let resp = post_csr(&c, emu.base_url(), FAMILY, &token, body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let statuses: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 401, 200, 201]);
}

#[tokio::test]
async fn certificate_modes_spoil_the_set() {
    let emu = start_default().await;
    let intermediate_pem = intermediate_pem(&emu).await;
    let intermediate = x509(&intermediate_pem);
    let inter_key = intermediate.public_key().unwrap();
    let our_key = test_key().public_key_to_der().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let set = issued_under(&emu, Fault::Expired).await;
    let leaf = x509(&set.certificates[0]);
    assert!(
        unix(leaf.not_after()) < now - 3000,
        "ended about an hour ago"
    );
    assert!(leaf.verify(&inter_key).unwrap());

    let set = issued_under(&emu, Fault::NotYetValid).await;
    let leaf = x509(&set.certificates[0]);
    assert!(
        unix(leaf.not_before()) > now + 3000,
        "starts in about an hour"
    );

    let set = issued_under(&emu, Fault::BadSignature).await;
    let leaf = x509(&set.certificates[0]);
    assert_eq!(
        leaf.issuer_name().to_der().unwrap(),
        intermediate.subject_name().to_der().unwrap()
    );
    assert!(!leaf.verify(&inter_key).unwrap());
    assert_eq!(
        leaf.public_key().unwrap().public_key_to_der().unwrap(),
        our_key
    );

    let set = issued_under(&emu, Fault::WrongKey).await;
    let leaf = x509(&set.certificates[0]);
    assert!(leaf.verify(&inter_key).unwrap());
    assert_ne!(
        leaf.public_key().unwrap().public_key_to_der().unwrap(),
        our_key
    );

    let set = issued_under(&emu, Fault::ShortLived).await;
    let leaf = x509(&set.certificates[0]);
    let claimed = parse_time(&set.expires_at) - parse_time(&set.created_at);
    assert_eq!(claimed.whole_seconds(), 3600);
    assert_eq!(set.expires_in, 3600);
    assert_eq!(unix(leaf.not_after()) - unix(leaf.not_before()), 900);
    assert_eq!(
        unix(leaf.not_after()),
        parse_time(&set.expires_at).unix_timestamp() - 2700
    );

    let set = issued_under(&emu, Fault::NoIntermediate).await;
    assert_eq!(set.certificates.len(), 1);
    assert!(x509(&set.certificates[0]).verify(&inter_key).unwrap());

    let set = issued_under(&emu, Fault::ExtraGarbage).await;
    assert_eq!(set.certificates.len(), 3);
    assert_eq!(set.certificates[2], GARBAGE_ELEMENT);

    let set = issued_under(&emu, Fault::GarbagePem).await;
    assert_eq!(set.certificates.len(), 2);
    assert!(set.certificates[1].starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(X509::from_pem(set.certificates[1].as_bytes()).is_err());

    let set = issued_under(&emu, Fault::WrongOrder).await;
    assert_eq!(set.certificates[0], intermediate_pem);
    let leaf = x509(&set.certificates[1]);
    assert_eq!(
        leaf.public_key().unwrap().public_key_to_der().unwrap(),
        our_key
    );
}

#[tokio::test]
async fn whole_answer_certificate_modes() {
    let emu = start_default().await;

    emu.set_fault(Fault::Truncated, Some(1));
    let resp = certificate_call(&emu).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body = resp.bytes().await.unwrap();
    assert!(body.starts_with(b"{\"certificates\":[\"-----BEGIN CERTIFICATE-----"));
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
    // About half of a ~3 KiB answer.
    assert!((1000..2500).contains(&body.len()), "{}", body.len());

    emu.set_fault(Fault::DocSample, Some(1));
    let resp = certificate_call(&emu).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.bytes().await.unwrap(), DOC_SAMPLE.as_bytes());

    // A bad request is still refused as such: faults act on answers the service would give.
    emu.set_fault(Fault::DocSample, Some(1));
    let c = client();
    let token = get_token(&c, emu.base_url(), FAMILY).await;
    let cn_csr = make_csr(test_key(), &[("CN", "me")], false);
    let resp = post_csr(&c, emu.base_url(), FAMILY, &token, json!({ "csr": cn_csr })).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    emu.set_fault(Fault::Huge, Some(1));
    let mut resp = certificate_call(&emu).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.content_length(), None, "no length announced");
    let mut read = 0usize;
    while read < 4 << 20 {
        read += resp.chunk().await.unwrap().expect("more to come").len();
    }
    drop(resp);
    // Abandoning the body mid-way leaves the server serving.
    assert_eq!(certificate_call(&emu).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn control_endpoint_sets_every_mode_by_name() {
    let emu = start_default().await;
    let c = client();
    let url = format!("{}/emulator/v1/fault", emu.base_url());
    for fault in Fault::ALL {
        let resp = c
            .put(&url)
            .json_body(&json!({ "mode": fault.name(), "count": 3 }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{fault}");
        assert_eq!(fault_state(&emu).await, (fault.name().to_string(), Some(3)));
    }
}
