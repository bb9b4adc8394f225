//! `eit-certd`: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    eit_certd::commands::main(eit_certd::cli::Cli::parse())
}
