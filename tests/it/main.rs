//! The integration tests: one binary (as ripgrep keeps them), a module per area. Every test
//! starts the real `eit-certd` binary, and where it needs a service, the real emulator; but
//! `differential`, which holds the library's validator against the real `openssl verify`.
// A benchmark and tests report on stdout; the product prints only through `out!`.
#![allow(clippy::print_stdout)]
#![allow(dead_code)]

#[macro_use]
mod common;

mod commands;
mod config_errors;
mod crash;
mod daemon;
mod demo;
mod differential;
mod faults;
mod first_hour;
mod fleet;
mod hook_scripts;
mod hostile_fs;
mod hostile_inputs;
mod integrations;
mod layout;
mod operator;
mod renew;
mod secrets;
mod soak;
mod spare;
mod swanctl;
mod trust;
