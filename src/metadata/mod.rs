//! The instance metadata service: its wire types (`api`, shared with the emulator) and the
//! client that talks to it.

pub mod api;
pub mod client;
