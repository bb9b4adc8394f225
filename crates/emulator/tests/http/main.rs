//! End-to-end tests: a real emulator on 127.0.0.1:0, driven over HTTP(S) with reqwest the
//! way eit-certd's client will drive it, through the crate's public API only. One test binary
//! (as the root crate's `tests/it`); the helpers here are shared with `faults`.

mod faults;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder, X509};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use eit_certd_emulator::wire::{CertificateResponse, ErrorBody, TokenResponse};
use eit_certd_emulator::*;

pub(crate) const VERSION: &str = "version=2025-08-26";
// The crate's own values, private to it; written out here so that a change shows up.
const ROOT_CN: &str = "eit-certd emulator Root CA";
const INTERMEDIATE_CN: &str = "eit-certd emulator Intermediate CA";
/// The request body limit (`body::BODY_LIMIT`).
const BODY_LIMIT: usize = 64 * 1024;

/// What the test reads back from `GET /metadata/v1/instance` (`wire::Instance` is built for
/// the crate's own tests only).
#[derive(Debug, serde::Deserialize)]
struct Instance {
    id: String,
    name: String,
    zone: Zone,
}

#[derive(Debug, serde::Deserialize)]
struct Zone {
    name: String,
}

/// What `GET`/`PUT /emulator/v1/fault` answer (`control::FaultStatus`).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct FaultStatus {
    pub mode: String,
    pub remaining: Option<u32>,
    pub modes: Vec<serde_json::Value>,
}
/// The older family is served only before 2025-08-26.
const OLD_FAMILY_VERSION: &str = "version=2025-04-22";

fn version_for(prefix: &str) -> &'static str {
    if prefix.starts_with("/instance_identity") {
        OLD_FAMILY_VERSION
    } else {
        VERSION
    }
}

/// reqwest is built without its `json` feature; these stand in for it.
pub(crate) trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}

pub(crate) trait ParseJson {
    async fn parse<T: DeserializeOwned>(self) -> T;
}

impl ParseJson for Response {
    async fn parse<T: DeserializeOwned>(self) -> T {
        let bytes = self.bytes().await.unwrap();
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
    }
}

pub(crate) fn client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

pub(crate) async fn start_default() -> Running {
    start(Options::default()).await.unwrap()
}

/// One 2048-bit key for all tests: generating it is the slowest step of a CSR.
pub(crate) fn test_key() -> &'static PKey<Private> {
    static KEY: OnceLock<PKey<Private>> = OnceLock::new();
    KEY.get_or_init(|| PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

pub(crate) fn make_csr(
    key: &PKey<Private>,
    subject: &[(&str, &str)],
    with_extension: bool,
) -> String {
    let mut name = X509NameBuilder::new().unwrap();
    for (field, value) in subject {
        name.append_entry_by_text(field, value).unwrap();
    }
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_version(0).unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(key).unwrap();
    if with_extension {
        let san = SubjectAlternativeName::new()
            .dns("example.com")
            .build(&b.x509v3_context(None))
            .unwrap();
        let mut extensions = Stack::new().unwrap();
        extensions.push(san).unwrap();
        b.add_extensions(&extensions).unwrap();
    }
    b.sign(key, MessageDigest::sha256()).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

pub(crate) async fn get_token(client: &Client, base: &str, prefix: &str) -> String {
    let resp = client
        .put(format!("{base}{prefix}/token?{}", version_for(prefix)))
        .header("Metadata-Flavor", "ibm")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.parse::<TokenResponse>().await.access_token
}

pub(crate) async fn post_csr(
    client: &Client,
    base: &str,
    prefix: &str,
    token: &str,
    body: Value,
) -> Response {
    client
        .post(format!(
            "{base}{prefix}/certificates?{}",
            version_for(prefix)
        ))
        .bearer_auth(token)
        .json_body(&body)
        .send()
        .await
        .unwrap()
}

/// Status and error code of an IBM error answer, after checking its content type.
pub(crate) async fn error_of(resp: Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: ErrorBody = resp.parse().await;
    assert_eq!(body.status_code, Some(status));
    assert_eq!(body.errors.len(), 1);
    (
        status,
        body.errors[0].code.clone(),
        body.errors[0].message.clone(),
    )
}

pub(crate) fn parse_time(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

/// A token of the shortest lifetime the service allows (5 s), once the emulator refuses it
/// as expired. The store is private to the crate, so the wait is for the emulator's own
/// verdict (an empty body is checked only after the token), polled under a deadline.
async fn stale_token(client: &Client, base: &str) -> String {
    let resp = client
        .put(format!("{base}/identity/v1/token?{VERSION}"))
        .header("Metadata-Flavor", "ibm")
        .json_body(&json!({ "expires_in": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let token = resp.parse::<TokenResponse>().await.access_token;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let resp = post_csr(client, base, "/identity/v1", &token, json!({})).await;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return token;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a 5-second token still accepted after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn common_name(cert: &X509) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap()
}

#[tokio::test]
async fn token_requires_metadata_flavor_and_bounds_expires_in() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();
    let url = format!("{base}/identity/v1/token?{VERSION}");

    let resp = c.put(&url).send().await.unwrap();
    let (status, code, message) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (400, "missing_metadata_flavor"));
    assert!(message.contains("Metadata-Flavor: ibm"), "{message}");
    let resp = c
        .put(&url)
        .header("Metadata-Flavor", "google")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.1, "missing_metadata_flavor");

    let resp = c
        .put(&url)
        .header("Metadata-Flavor", "ibm")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let token: TokenResponse = resp.parse().await;
    assert_eq!(token.expires_in, 300);
    assert!(token.access_token.starts_with("eyJ"));
    assert!(token.created_at.ends_with('Z') && !token.created_at.contains('.'));
    let lifetime = parse_time(&token.expires_at) - parse_time(&token.created_at);
    assert_eq!(lifetime, time::Duration::seconds(300));

    // The documented `curl -d '{"expires_in": 3600}'` sends a form content type.
    let resp = c
        .put(&url)
        .header("Metadata-Flavor", "ibm")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"expires_in": 3600}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.parse::<TokenResponse>().await.expires_in, 3600);

    for bad in [4000, 4] {
        let resp = c
            .put(&url)
            .header("Metadata-Flavor", "ibm")
            .json_body(&json!({ "expires_in": bad }))
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (400, "invalid_expires_in"));
        assert!(message.contains("between 5 and 3600"), "{message}");
    }
    let resp = c
        .put(&url)
        .header("Metadata-Flavor", "ibm")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(resp).await.1,
        "invalid_request_body",
        "malformed JSON"
    );
}

#[tokio::test]
async fn version_is_required_and_checked() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();
    let cases = [
        ("", "missing_version"),
        ("?version=2021-01-01", "invalid_version"),
        ("?version=2022-02-28", "invalid_version"),
        ("?version=yesterday", "invalid_version"),
    ];
    for (query, expected) in cases {
        let resp = c
            .put(format!("{base}/identity/v1/token{query}"))
            .header("Metadata-Flavor", "ibm")
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (400, expected), "query {query:?}");
    }
    let resp = c
        .put(format!("{base}/identity/v1/token?version=2022-03-01"))
        .header("Metadata-Flavor", "ibm")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The certificate call checks the version before the token.
    let resp = c
        .post(format!("{base}/identity/v1/certificates"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.1, "missing_version");
}

#[tokio::test]
async fn certificate_needs_a_valid_token() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();
    let body = json!({ "csr": make_csr(test_key(), &[("C", "US")], false) });

    let resp = c
        .post(format!("{base}/identity/v1/certificates?{VERSION}"))
        .json_body(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(resp).await,
        (
            401,
            "invalid_token".to_string(),
            "An Authorization: Bearer <token> header is required; get a token with PUT /identity/v1/token."
                .to_string()
        )
    );
    let resp = post_csr(&c, base, "/identity/v1", "not-a-token", body.clone()).await;
    assert_eq!(error_of(resp).await.1, "invalid_token");

    let stale = stale_token(&c, base).await;
    let resp = post_csr(&c, base, "/identity/v1", &stale, body).await;
    assert_eq!(error_of(resp).await.0, 401);
    let resp = post_csr(&c, base, "/identity/v1", &stale, json!({})).await;
    assert_eq!(error_of(resp).await.1, "expired_token");
}

#[tokio::test]
async fn good_csr_gets_a_chain_to_the_root() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();
    let token = get_token(&c, base, "/identity/v1").await;
    let csr = make_csr(test_key(), &[("C", "US"), ("O", "Test")], false);

    let resp = post_csr(&c, base, "/identity/v1", &token, json!({ "csr": csr })).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let issued: CertificateResponse = resp.parse().await;
    assert_eq!(issued.certificates.len(), 2);
    assert_eq!(issued.expires_in, 3600);
    assert_eq!(issued.id.len(), 36);
    assert_eq!(
        parse_time(&issued.expires_at) - parse_time(&issued.created_at),
        time::Duration::seconds(3600)
    );

    let leaf = X509::from_pem(issued.certificates[0].as_bytes()).unwrap();
    let intermediate = X509::from_pem(issued.certificates[1].as_bytes()).unwrap();
    let root = X509::from_pem(emu.root_pem().as_bytes()).unwrap();
    assert!(leaf.verify(&intermediate.public_key().unwrap()).unwrap());
    assert!(intermediate.verify(&root.public_key().unwrap()).unwrap());
    assert!(!leaf.verify(&root.public_key().unwrap()).unwrap());
    assert_eq!(common_name(&leaf), DEFAULT_INSTANCE_ID);
    assert_eq!(common_name(&intermediate), INTERMEDIATE_CN);
    assert_eq!(common_name(&root), ROOT_CN);
    assert_eq!(
        leaf.public_key().unwrap().public_key_to_der().unwrap(),
        test_key().public_key_to_der().unwrap()
    );
    let created = parse_time(&issued.created_at).unix_timestamp();
    let expires = parse_time(&issued.expires_at).unix_timestamp();
    assert!(leaf.not_before() == Asn1Time::from_unix(created as _).unwrap());
    assert!(leaf.not_after() == Asn1Time::from_unix(expires as _).unwrap());
    let subject: Vec<String> = leaf
        .subject_name()
        .entries()
        .map(|e| e.object().nid().short_name().unwrap().to_string())
        .collect();
    assert_eq!(subject, ["C", "O", "CN"]);

    let records = emu.requests();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].method.as_str(), records[0].path.as_str()),
        ("PUT", "/identity/v1/token")
    );
    assert_eq!(records[0].status, 200);
    assert!(records[0].csr.is_none());
    let cert_call = &records[1];
    assert_eq!(
        (
            cert_call.method.as_str(),
            cert_call.path.as_str(),
            cert_call.status
        ),
        ("POST", "/identity/v1/certificates", 201)
    );
    assert!(parse_time(&cert_call.at) <= OffsetDateTime::now_utc());
    assert_eq!(
        cert_call.csr,
        Some(CsrView {
            subject: vec![("C".into(), "US".into()), ("O".into(), "Test".into())],
            extension_count: 0,
            key_bits: 2048,
        })
    );
}

#[tokio::test]
async fn csr_rules_are_enforced_and_recorded() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();
    let token = get_token(&c, base, "/identity/v1").await;
    let small_key = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
    let cases = [
        (
            make_csr(test_key(), &[("C", "US"), ("CN", "me")], false),
            "csr_common_name_not_allowed",
        ),
        (
            make_csr(test_key(), &[("C", "US")], true),
            "csr_extensions_not_allowed",
        ),
        (
            make_csr(&small_key, &[("C", "US")], false),
            "csr_key_too_small",
        ),
        (
            make_csr(test_key(), &[("C", "US"), ("emailAddress", "a@b.c")], false),
            "csr_subject_not_allowed",
        ),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            "invalid_csr",
        ),
    ];
    for (csr, expected) in &cases {
        let resp = post_csr(&c, base, "/identity/v1", &token, json!({ "csr": csr })).await;
        let (status, code, message) = error_of(resp).await;
        assert_eq!((status, code.as_str()), (400, *expected), "{message}");
        if *expected == "csr_common_name_not_allowed" {
            assert!(message.contains("sets CN"), "{message}");
        }
    }
    let resp = post_csr(
        &c,
        base,
        "/identity/v1",
        &token,
        json!({ "csr": make_csr(test_key(), &[("C", "US")], false), "expires_in": 86_401 }),
    )
    .await;
    assert_eq!(error_of(resp).await.1, "invalid_expires_in");
    let resp = post_csr(
        &c,
        base,
        "/identity/v1",
        &token,
        json!({ "expires_in": 60 }),
    )
    .await;
    assert_eq!(error_of(resp).await.1, "invalid_request_body");

    let views: Vec<Option<CsrView>> = emu.requests().into_iter().map(|r| r.csr).collect();
    assert_eq!(views.len(), 1 + cases.len() + 2);
    assert_eq!(
        views[1],
        Some(CsrView {
            subject: vec![("C".into(), "US".into()), ("CN".into(), "me".into())],
            extension_count: 0,
            key_bits: 2048,
        })
    );
    assert_eq!(views[2].as_ref().unwrap().extension_count, 1);
    assert_eq!(views[3].as_ref().unwrap().key_bits, 1024);
    assert_eq!(views[5], None, "an unreadable CSR has no view");
    assert_eq!(views[6].as_ref().unwrap().key_bits, 2048);
    assert!(emu.requests().iter().skip(1).all(|r| r.status == 400));
}

#[tokio::test]
async fn documented_sample_csr_is_accepted() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();
    let token = get_token(&c, base, "/identity/v1").await;
    let csr = include_str!("../../data/sample-request.csr");
    let resp = post_csr(&c, base, "/identity/v1", &token, json!({ "csr": csr })).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let issued: CertificateResponse = resp.parse().await;
    let leaf = X509::from_pem(issued.certificates[0].as_bytes()).unwrap();
    let text = String::from_utf8(leaf.to_text().unwrap()).unwrap();
    assert!(
        text.contains(&format!(
            "Subject: C=US, ST=Minnesota, L=Rochester, O=Internet Widgits Pty Ltd, CN={DEFAULT_INSTANCE_ID}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn max_lifetime_caps_issued_certificates() {
    let emu = start(Options {
        max_lifetime: Some(Duration::from_secs(30)),
        ..Options::default()
    })
    .await
    .unwrap();
    let base = emu.base_url();
    let c = client();
    let token = get_token(&c, base, "/identity/v1").await;
    let csr = make_csr(test_key(), &[("C", "US")], false);
    let resp = post_csr(
        &c,
        base,
        "/identity/v1",
        &token,
        json!({ "csr": csr, "expires_in": 3600 }),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let issued: CertificateResponse = resp.parse().await;
    assert_eq!(issued.expires_in, 30);
    let leaf = X509::from_pem(issued.certificates[0].as_bytes()).unwrap();
    let diff = leaf.not_before().diff(leaf.not_after()).unwrap();
    assert_eq!((diff.days, diff.secs), (0, 30));

    // Below the cap, the request is honoured.
    let resp = post_csr(
        &c,
        base,
        "/identity/v1",
        &token,
        json!({ "csr": csr, "expires_in": 10 }),
    )
    .await;
    assert_eq!(resp.parse::<CertificateResponse>().await.expires_in, 10);
}

#[tokio::test]
async fn instance_identity_family_and_other_calls() {
    let emu = start(Options {
        instance_id: "0787_12345678-aaaa-bbbb-cccc-1234567890ab".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let base = emu.base_url();
    let c = client();
    let prefix = "/instance_identity/v1";
    let token = get_token(&c, base, prefix).await;
    // ... but not at the version that retired it.
    let retired = c
        .put(format!("{base}{prefix}/token?{VERSION}"))
        .header("Metadata-Flavor", "ibm")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(retired).await.1, "invalid_version");

    let csr = make_csr(test_key(), &[("C", "US"), ("OU", "Storage")], false);
    let resp = post_csr(&c, base, prefix, &token, json!({ "csr": csr })).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let issued: CertificateResponse = resp.parse().await;
    let leaf = X509::from_pem(issued.certificates[0].as_bytes()).unwrap();
    assert_eq!(
        common_name(&leaf),
        "0787_12345678-aaaa-bbbb-cccc-1234567890ab"
    );

    let iam = |body: Value| {
        c.post(format!("{base}{prefix}/iam_token?{OLD_FAMILY_VERSION}"))
            .bearer_auth(&token)
            .json_body(&body)
            .send()
    };
    let resp = iam(json!({})).await.unwrap();
    assert_eq!(
        error_of(resp).await.1,
        "missing_trusted_profile",
        "no profile"
    );
    let resp = iam(json!({ "trusted_profile": {} })).await.unwrap();
    assert_eq!(error_of(resp).await.1, "missing_trusted_profile");
    for profile in [
        json!({ "id": "Profile-8dd84246-7df4-4667-94e4-8cede51d5ac5" }),
        json!({ "crn": "crn:v1:bluemix:public:iam-identity::a/1::profile:Profile-1" }),
    ] {
        let resp = iam(json!({ "trusted_profile": profile })).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let iam_token: TokenResponse = resp.parse().await;
        assert_eq!(iam_token.expires_in, 3600);
        assert_ne!(iam_token.access_token, token);
    }

    let url = format!("{base}/metadata/v1/instance?{VERSION}");
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(error_of(resp).await.1, "invalid_token");
    let resp = c.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let instance: Instance = resp.parse().await;
    assert_eq!(instance.id, "12345678-aaaa-bbbb-cccc-1234567890ab");
    assert_eq!(instance.name, "eit-certd-emulator");
    assert_eq!(instance.zone.name, "us-south-1");
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_big_bodies() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();

    let resp = c
        .get(format!("{base}/identity/v2/token?{VERSION}"))
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert!(message.contains("GET /identity/v2/token"), "{message}");

    let resp = c
        .get(format!("{base}/identity/v1/token?{VERSION}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(resp).await,
        (
            405,
            "method_not_allowed".to_string(),
            "/identity/v1/token does not accept GET.".to_string()
        )
    );

    let token = get_token(&c, base, "/identity/v1").await;
    let huge = "A".repeat(BODY_LIMIT + 1);
    let resp = post_csr(&c, base, "/identity/v1", &token, json!({ "csr": huge })).await;
    assert_eq!(error_of(resp).await.1, "request_too_large");

    let statuses: Vec<(String, u16)> = emu
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("/identity/v2/token".to_string(), 404),
            ("/identity/v1/token".to_string(), 405),
            ("/identity/v1/token".to_string(), 200),
            ("/identity/v1/certificates".to_string(), 413),
        ]
    );
}

#[tokio::test]
async fn https_is_trusted_through_the_root_only() {
    let emu = start(Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let port = emu.local_addr().port();
    assert_eq!(emu.base_url(), format!("https://127.0.0.1:{port}"));

    // A client with only the usual roots fails the handshake; the server survives it.
    let untrusting = client();
    let err = untrusting
        .put(format!("{}/identity/v1/token?{VERSION}", emu.base_url()))
        .header("Metadata-Flavor", "ibm")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // Nor does a peer that sends no TLS at all.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::TcpStream::connect(emu.local_addr())
            .await
            .unwrap();
        raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        // The server answers with a TLS alert or just closes; either way it hangs up.
        raw.read_to_end(&mut buf).await.unwrap();
    }

    let addr: SocketAddr = emu.local_addr();
    let trusting = Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(emu.root_pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .resolve("api.metadata.cloud.ibm.com", addr)
        .build()
        .unwrap();
    for host in ["127.0.0.1", "localhost", "api.metadata.cloud.ibm.com"] {
        let resp = trusting
            .put(format!("https://{host}:{port}/identity/v1/token?{VERSION}"))
            .header("Metadata-Flavor", "ibm")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "via {host}");
    }
    // Control calls see the peer address over HTTPS too.
    let resp = trusting
        .get(format!("{}/emulator/v1/requests", emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.parse::<Vec<RequestRecord>>().await.len(), 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn fault_control_and_request_log_endpoints() {
    let emu = start_default().await;
    let base = emu.base_url();
    let c = client();
    let fault_url = format!("{base}/emulator/v1/fault");

    let resp = c
        .put(&fault_url)
        .json_body(&json!({ "mode": "meltdown" }))
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(resp).await;
    assert_eq!((status, code.as_str()), (400, "invalid_fault_mode"));
    assert!(
        message.starts_with("unknown fault mode \"meltdown\"; valid modes: ok, status-503, "),
        "{message}"
    );

    let resp = c
        .put(&fault_url)
        .json_body(&json!({ "mode": "ok", "count": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let state: FaultStatus = resp.parse().await;
    assert_eq!((state.mode.as_str(), state.remaining), ("ok", Some(2)));
    assert_eq!(state.modes.len(), Fault::ALL.len());

    get_token(&c, base, "/identity/v1").await;
    let state: FaultStatus = c.get(&fault_url).send().await.unwrap().parse().await;
    assert_eq!(state.remaining, Some(1), "one API call used one count");

    emu.set_fault(Fault::Ok, None);
    let state: FaultStatus = c.get(&fault_url).send().await.unwrap().parse().await;
    assert_eq!((state.mode.as_str(), state.remaining), ("ok", None));

    let records: Vec<RequestRecord> = c
        .get(format!("{base}/emulator/v1/requests"))
        .send()
        .await
        .unwrap()
        .parse()
        .await;
    assert_eq!(records.len(), 1, "control calls are not recorded");
    assert_eq!(records[0].path, "/identity/v1/token");
    assert_eq!(emu.requests().len(), 1);
}

#[tokio::test]
async fn state_dir_gets_root_and_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("nested/state");
    let emu = start(Options {
        state_dir: Some(state_dir.clone()),
        ..Options::default()
    })
    .await
    .unwrap();
    let ca = std::fs::read_to_string(state_dir.join("ca.pem")).unwrap();
    assert_eq!(ca, emu.root_pem());
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----\n"));
    let endpoint = std::fs::read_to_string(state_dir.join("endpoint")).unwrap();
    assert_eq!(endpoint, format!("{}\n", emu.base_url()));
    assert_eq!(
        endpoint,
        format!("http://127.0.0.1:{}\n", emu.local_addr().port())
    );
}

#[tokio::test]
async fn state_dir_failure_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = start(Options {
        state_dir: Some(file.clone()),
        ..Options::default()
    })
    .await
    .err()
    .unwrap();
    assert!(matches!(&err, EmulatorError::StateDir { path, .. } if *path == file));
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[tokio::test]
async fn bind_failure_names_the_address_and_shutdown_stops_serving() {
    let emu = start_default().await;
    let addr = emu.local_addr();
    let err = start(Options {
        listen: addr,
        ..Options::default()
    })
    .await
    .err()
    .unwrap();
    assert!(matches!(err, EmulatorError::Bind { addr: a, .. } if a == addr));
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    let base = emu.base_url().to_string();
    emu.shutdown().await;
    let err = client()
        .put(format!("{base}/identity/v1/token?{VERSION}"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn dropping_wait_stops_the_server() {
    let emu = start_default().await;
    let url = format!("{}/identity/v1/token?{VERSION}", emu.base_url());
    let resp = client()
        .put(&url)
        .header("Metadata-Flavor", "ibm")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // The CLI races `wait` against Ctrl-C; losing the race drops the future.
    let waited = tokio::time::timeout(Duration::from_millis(50), emu.wait()).await;
    assert!(waited.is_err(), "the server does not stop by itself");

    let mut refused = false;
    for _ in 0..50 {
        match client().put(&url).send().await {
            Err(e) if e.is_connect() => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "the server still accepts connections");
}
