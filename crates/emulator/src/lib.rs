//! A local stand-in for the IBM Cloud VPC instance metadata service, for demos and
//! integration tests: instance identity tokens, instance identity certificates signed by
//! a CA generated at start, IAM tokens and the instance document, in both path families,
//! with the service's validation rules and error bodies.
//!
//! This file owns the public interface: [`Options`], [`start`], [`Running`] and
//! [`EmulatorError`] (defined in `error`, which the TLS setup returns too). The emulator also answers loopback-only control calls under
//! `/emulator/v1/` (`PUT fault`, `GET requests`) that mirror [`Running::set_fault`] and
//! [`Running::requests`].

mod api_error;
mod body;
mod ca;
mod clock;
mod control;
mod csr;
mod error;
mod faults;
mod ids;
mod journal;
mod misbehave;
mod routes;
mod server;
mod state;
mod stop;
mod tls;
mod tokens;
pub mod wire;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use csr::CsrView;
pub use error::EmulatorError;
pub use faults::{Fault, Scope, UnknownFault};
pub use journal::RequestRecord;

use ca::Authority;
use faults::FaultSwitch;
use journal::Journal;
use state::Shared;
use tokens::TokenStore;

/// The instance id the emulator uses unless told otherwise (the documented sample's).
pub const DEFAULT_INSTANCE_ID: &str = "0717_eb1b7391-2ca2-4ab5-84a8-b92157a633b0";

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Serve HTTPS (certificate from the emulator's root) instead of HTTP.
    pub tls: bool,
    /// If set, the root CA is written to `state_dir/ca.pem` and the base URL (plus a
    /// newline) to `state_dir/endpoint`, creating the directory. `endpoint` is written
    /// last, once the server is accepting, so its presence means "ready".
    pub state_dir: Option<PathBuf>,
    /// Cap on the lifetime of issued certificates, whatever the client asks for.
    pub max_lifetime: Option<Duration>,
    /// The fault mode at start.
    pub fault: Fault,
    /// The instance id, which becomes the CN of every issued certificate.
    pub instance_id: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: false,
            state_dir: None,
            max_lifetime: None,
            fault: Fault::Ok,
            instance_id: DEFAULT_INSTANCE_ID.to_string(),
        }
    }
}

/// A running emulator. Dropping it stops the server too (gracefully, in the background);
/// [`Running::shutdown`] stops it and waits until it has stopped.
pub struct Running {
    base_url: String,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// Sending `true`, or dropping this, tells the server to stop.
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("base_url", &self.base_url)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Binds, generates the CA (and the HTTPS certificate), starts serving in a background
/// task and returns at once.
pub async fn start(opts: Options) -> Result<Running, EmulatorError> {
    // Bind first: a port already in use should fail before the slow key generation.
    let bind_error = |source| EmulatorError::Bind {
        addr: opts.listen,
        source,
    };
    let listener = TcpListener::bind(opts.listen).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;

    let tls = opts.tls;
    let (authority, server_cert) = tokio::task::spawn_blocking(move || {
        let authority = Authority::generate()?;
        let server_cert = if tls {
            Some(authority.issue_server_cert()?)
        } else {
            None
        };
        Ok::<_, openssl::error::ErrorStack>((authority, server_cert))
    })
    .await
    .map_err(|join_error| match join_error.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(cancelled) => EmulatorError::ca(cancelled),
    })?
    .map_err(EmulatorError::ca)?;
    let acceptor = server_cert.as_ref().map(tls::acceptor).transpose()?;

    let base_url = format!(
        "{}://{}",
        if tls { "https" } else { "http" },
        connectable(local_addr)
    );
    let root_pem = authority.root_pem().to_string();
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        instance_id: opts.instance_id,
        max_lifetime: Mutex::new(opts.max_lifetime),
        authority,
        tokens: Mutex::new(TokenStore::default()),
        journal: Journal::default(),
        faults: FaultSwitch::new(opts.fault),
        stop: stop_rx.clone(),
    });

    let app = server::app(shared.clone());
    let server = match acceptor {
        Some(acceptor) => tokio::spawn(tls::serve_https(listener, app, acceptor, stop_rx)),
        None => tokio::spawn(server::serve_http(listener, app, stop_rx)),
    };
    // From here on, returning early drops `stop`, which stops the server again.

    if let Some(dir) = &opts.state_dir {
        // A few hundred bytes, once, at start-up: not worth a hop to a blocking thread.
        write_state(dir, &root_pem, &base_url)?;
    }
    tracing::info!(url = %base_url, "metadata service emulator listening");
    Ok(Running {
        base_url,
        local_addr,
        shared,
        stop,
        server,
    })
}

impl Running {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The root CA certificate (PEM) that issued certificates and the HTTPS certificate
    /// chain to.
    pub fn root_pem(&self) -> &str {
        self.shared.authority.root_pem()
    }

    /// Switches the fault mode: `count` `None` until changed, `Some(n)` for the next `n`
    /// API calls the mode applies to (every call for status and transport modes, only
    /// certificate calls for the others; see [`Fault::scope`]), after which the emulator
    /// behaves normally again.
    pub fn set_fault(&self, fault: Fault, count: Option<u32>) {
        self.shared.faults.set(fault, count);
    }

    /// Changes the cap on issued certificate lifetimes (`None`: what the client asks for).
    pub fn set_max_lifetime(&self, cap: Option<Duration>) {
        // The lock only guards a plain value: a poisoned lock still holds a valid one.
        *self
            .shared
            .max_lifetime
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = cap;
    }

    /// The API calls the emulator has served, oldest first (the last 1000).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.journal.snapshot()
    }

    /// Stops accepting, lets open requests finish, and waits for the server to stop.
    pub async fn shutdown(self) {
        // An error only means the server has already stopped.
        let _ = self.stop.send(true);
        join(self.server).await;
    }

    /// Runs until the server stops by itself (it only does on a fatal error). Dropping this
    /// future stops the server, as dropping [`Running`] does.
    pub async fn wait(self) {
        let Running { stop, server, .. } = self;
        join(server).await;
        drop(stop);
    }
}

async fn join(server: JoinHandle<()>) {
    if let Err(e) = server.await {
        tracing::error!(error = %e, "emulator server task failed");
    }
}

/// The address clients should use: a wildcard listen address is reached via loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn write_state(dir: &Path, root_pem: &str, base_url: &str) -> Result<(), EmulatorError> {
    std::fs::create_dir_all(dir).map_err(|source| EmulatorError::StateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomically(&dir.join("ca.pem"), root_pem.as_bytes())?;
    write_atomically(&dir.join("endpoint"), format!("{base_url}\n").as_bytes())
}

/// Writes via a temporary file and a rename, so a reader polling for the file never sees
/// it half-written.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), EmulatorError> {
    let error = |source| EmulatorError::StateDir {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    // Temporary files are created owner-only; these hold nothing secret and other local
    // users (a demo's client) may need to read them.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(error)?;
    }
    file.persist(path).map_err(|e| error(e.error))?;
    Ok(())
}
