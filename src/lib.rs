//! eit-certd keeps an IBM Cloud VPC *instance identity certificate* fresh on disk, for File
//! Storage shares mounted with encryption in transit (stunnel, or NFS over TLS via tlshd).
//!
//! The pipeline, one module per stage:
//! [`config`] → [`metadata::client`] (token, certificate request) → [`pki`] (key, CSR,
//! validation) → [`store`] (atomic install) → [`state`]/[`status`]; [`schedule`] decides when,
//! [`renew`] runs one attempt end to end. [`emulator`] is a local stand-in for the metadata
//! service, with a real CA and faults on demand.
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
