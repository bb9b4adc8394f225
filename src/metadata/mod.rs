//! The instance metadata service: its wire types (`api`) and the client that talks to it.
//! The emulator keeps its own wire types (`eit_certd_emulator::wire`), deliberately not
//! shared: each side is written from the documentation and held to the documented samples,
//! so that a mistake in one side's idea of the wire format fails an exchange.

pub mod api;
pub mod client;
