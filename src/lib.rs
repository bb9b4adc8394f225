//! eit-certd keeps an IBM Cloud VPC *instance identity certificate* fresh on disk, for File
//! Storage shares mounted with encryption in transit (stunnel, or NFS over TLS via tlshd).
//!
//! # The map
//!
//! Each folder answers one question; a folder imports only from the folders above it in this
//! list (`tests/it/layout.rs` fails on an import circle between modules or folders):
//!
//! | folder | the question it answers |
//! | --- | --- |
//! | [`text`], [`files`], [`footprint`] | helpers: text fit for one line, hex and times; bounded, link-refusing reads and atomic writes; giving memory back |
//! | [`config`] | what the operator asked for: typed TOML, errors with file:line, [`config::problem`] (a finding named by its setting) |
//! | [`metadata`] | how the service is spoken to: wire types ([`metadata::api`]) and the client (token cache, `auto` endpoint, typed transport failures) |
//! | [`pki`] | whether a certificate is right: key, CSR, validation, trust anchors, CA expiry (pure, no files of ours) |
//! | [`store`] | everything under `output.dir`: generations and the `current` swap, `state.json`, the lock, the spare key |
//! | [`integrations`] | the consumers' own formats: swanctl's directories, stunnel's section |
//! | [`renew`] | one attempt end to end ([`renew::Renewer`]), the key source, the hooks, the schedule (pure) |
//! | [`report`] | what the operator is told: `status`, the metrics file, `check`, the consumers behind the hooks |
//! | [`daemon`] | the long run: the pure [`daemon::machine`], the loop around it, its clocks, systemd |
//! | [`cli`] | the command line: arguments, one file per command, the demo, the man page |
//!
//! The pipeline: [`config`] → [`metadata::client`] (token, certificate request) → [`pki`]
//! (key, CSR, validation) → [`store`] (atomic install) → [`renew::hooks`]; [`renew::schedule`]
//! decides when, [`daemon`] keeps doing it, [`report`] says how it went. [`emulator`] is a
//! local stand-in for the metadata service, with a real CA and faults on demand.
//!
//! # Errors: one rule
//!
//! Every error type here is a `thiserror` enum whose message is a whole sentence *including
//! its cause* (the I/O error, the service's words, the rejection), and whose `source()` is
//! empty: a field holding a cause is called `cause`, never `source`, and `#[from]` appears only
//! on `#[error(transparent)]` wrappers, which add no words. So `to_string()` is the complete
//! message wherever an error is logged or recorded, and printing an anyhow chain (the command
//! edge's contexts, then our error) shows each cause exactly once, with no de-duplication.
//! Errors are told apart by their variants (and, for transport failures, by
//! `metadata::client::TransportFailure`, classified from the underlying `io::Error` and
//! `rustls::Error` types), never by their text.

pub mod cli;
pub mod config;
pub mod daemon;
#[cfg(feature = "emulator")]
pub use eit_certd_emulator as emulator;
pub mod files;
pub mod footprint;
pub mod integrations;
pub mod metadata;
pub mod pki;
pub mod renew;
pub mod report;
pub mod store;
pub mod text;
