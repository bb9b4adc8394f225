//! The generated documents: `completions` and `man`.

use std::io::Write;

use super::{failed, CommandResult};
use crate::cli::{Cli, CompletionsArgs};

pub(super) fn completions(args: &CompletionsArgs) -> CommandResult {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut text = Vec::new();
    clap_complete::generate(args.shell, &mut command, "eit-certd", &mut text);
    out_raw!("{}", String::from_utf8_lossy(&text));
    Ok(0)
}

pub(super) fn man() -> CommandResult {
    use clap::CommandFactory;
    let mut text = Vec::new();
    crate::cli::manpage::render(Cli::command(), &mut text).map_err(failed)?;
    out_raw!("{}", String::from_utf8_lossy(&text));
    Ok(0)
}
