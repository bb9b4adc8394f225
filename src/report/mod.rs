//! What eit-certd tells its operator: the installed set's health ([`status`]), the metrics
//! file ([`metrics`]), the configuration and its environment checked before anything runs
//! ([`check`]), and the consumers behind the hooks ([`consumers`], [`access`], [`sandbox`]).

pub mod access;
pub mod check;
pub mod consumers;
pub mod metrics;
pub mod sandbox;
pub mod status;
