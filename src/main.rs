//! `eit-certd`: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // First, before anything touches libcrypto: OpenSSL then initialises without its atexit
    // cleanup, which would otherwise free its state at exit under a key still being generated
    // on another thread (the daemon pre-generates keys) and crash or hang the exit.
    openssl::init();
    eit_certd::cli::commands::main(eit_certd::cli::Cli::parse())
}
