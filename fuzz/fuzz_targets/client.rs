//! The real metadata client against a service whose answer is the fuzz input: a loopback HTTP
//! server in this process answers one call with the input's status and body, and
//! `eit_certd::metadata::client::Client` does what the daemon does with it (token cache,
//! error-body summary, JSON, body cap), then, for a certificate answer, what `service_body`
//! does. This reaches the private code behind the public parse: `error_message`, the token's
//! lifetime arithmetic, `read_capped`.
//!
//! Input: byte 0 picks the call (token, certificate, IAM token, instance), byte 1 the HTTP
//! status, the rest is the body. Other calls (the token before a certificate call) get a fixed
//! good answer. The oracle: no panic, and every error is one line (errors go into logs,
//! `state.json`, `status` and sd_notify's `STATUS=`).
//! Token answers whose `expires_in` does not fit an `Instant` are included: they panicked
//! before issue 12 #2 was fixed (reproducer in `artifacts-found/`).

#![no_main]

#[path = "common.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use eit_certd::config::MetadataConfig;
use eit_certd::metadata::api::TrustedProfileRef;
use eit_certd::metadata::client::{Client, ClientError};
use libfuzzer_sys::fuzz_target;

const GOOD_TOKEN: &[u8] = br#"{"access_token":"fuzz-token-0123456789","created_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:05:00Z","expires_in":300}"#;

const STATUSES: [u16; 16] = [
    200, 201, 202, 204, 301, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504, 599,
];

#[derive(Clone, Copy, PartialEq)]
enum Call {
    Token,
    Certificate,
    IamToken,
    Instance,
}

/// What the server answers: the fuzzed call gets `status`/`body`, every other call a good token.
struct Answer {
    call: Call,
    status: u16,
    body: Vec<u8>,
}

static ANSWER: Mutex<Option<Answer>> = Mutex::new(None);

struct Harness {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve(stream));
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = Client::new(&MetadataConfig::default(), &base).expect("client");
        Harness { runtime, client }
    })
}

/// A minimal HTTP/1.1 keep-alive server: reads each request (headers, Content-Length body) and
/// answers from `ANSWER`.
fn serve(stream: TcpStream) {
    // Small writes on loopback otherwise wait for delayed ACKs (~40 ms per call).
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let call = if request_line.contains("/token") {
            Call::Token
        } else if request_line.contains("/certificates") {
            Call::Certificate
        } else if request_line.contains("/iam_token") {
            Call::IamToken
        } else {
            Call::Instance
        };
        let (status, payload) = match &*ANSWER.lock().unwrap() {
            Some(a) if a.call == call => (a.status, a.body.clone()),
            _ => (200, GOOD_TOKEN.to_vec()),
        };
        let mut response = format!(
            "HTTP/1.1 {status} Fuzz\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        response.extend_from_slice(&payload);
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [op, status, body @ ..] = data else {
        return;
    };
    let call = match op % 4 {
        0 => Call::Token,
        1 => Call::Certificate,
        2 => Call::IamToken,
        _ => Call::Instance,
    };
    let status = STATUSES[usize::from(*status) % STATUSES.len()];
    let h = harness();
    *ANSWER.lock().unwrap() = Some(Answer {
        call,
        status,
        body: body.to_vec(),
    });
    h.runtime.block_on(async {
        // Each call starts from an empty token cache, so the token call is made every time.
        h.client.forget_token().await;
        match call {
            Call::Token => error_is_one_line(h.client.token().await.err()),
            Call::Certificate => {
                match h
                    .client
                    .request_certificate("csr", Duration::from_secs(3600))
                    .await
                {
                    Ok(issued) => common::certificates(&issued.response.certificates),
                    Err(e) => error_is_one_line(Some(e)),
                }
            }
            Call::IamToken => {
                let profile = TrustedProfileRef {
                    id: Some("Profile-0123".into()),
                    crn: None,
                };
                error_is_one_line(h.client.iam_token(profile).await.err());
            }
            Call::Instance => error_is_one_line(h.client.instance().await.err()),
        }
    });
});

fn error_is_one_line(error: Option<ClientError>) {
    if let Some(e) = error {
        let message = e.to_string();
        assert!(
            !message.chars().any(char::is_control),
            "a client error must be one line: {message:?}"
        );
    }
}
