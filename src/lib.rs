//! eit-certd keeps an IBM Cloud VPC *instance identity certificate* fresh on disk, for File
//! Storage shares mounted with encryption in transit (stunnel, or NFS over TLS via tlshd).
//!
//! The pipeline, one module per stage:
//! [`config`] → [`metadata::client`] (token, certificate request) → [`pki`] (key, CSR,
//! validation) → [`store`] (atomic install) → [`state`]/[`status`]; [`schedule`] decides when,
//! [`renew`] runs one attempt end to end. [`emulator`] is a local stand-in for the metadata
//! service, with a real CA and faults on demand.

pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod config_words;
pub mod daemon;
pub mod emulator;
pub mod files;
pub mod hooks;
pub mod lock;
pub mod manpage;
pub mod metadata;
pub mod metrics;
pub mod pki;
pub mod renew;
pub mod schedule;
pub mod state;
pub mod status;
pub mod store;
pub mod stunnel;
pub mod swanctl;
pub mod systemd;
pub mod text;
pub mod wallclock;
