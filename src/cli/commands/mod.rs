//! What each subcommand does, at the edge between the library and the user: load the config,
//! call the library, print results to stdout and turn errors into exit codes.
//!
//! This file owns the edge itself: `main` (logging, the runtime, the exit policy), the error
//! rendering, the dispatch, the helpers the subcommands share (the config, the store) and
//! `out!`/`out_raw!`, the only writers to stdout. Each subcommand, or family of them, has its
//! own file below; the demo and the emulator only with the `emulator` feature.
//!
//! Exit codes (everywhere): 0 ok, 1 the operation failed (service, validation, I/O),
//! 2 usage or configuration error; `status` also uses 3 for expired or missing.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::{Cli, Command, LogFormat};
use crate::config::Config;
use crate::store::Store;

// The macros come before the `mod` lines: a `macro_rules!` is visible only below it, and the
// subcommand files print with them.

/// Writes a line to stdout. A reader that went away (`status --json | head`) ends only our
/// output: the write error is ignored and the command exits with its own code (Rust ignores
/// SIGPIPE, so the write fails with EPIPE instead of killing us; `println!` would panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// [`out!`] without the newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// A failed command: what to print and which code to exit with.
#[derive(Debug)]
pub struct CommandError {
    pub code: u8,
    pub error: anyhow::Error,
}

fn usage(e: impl Into<anyhow::Error>) -> CommandError {
    CommandError {
        code: 2,
        error: e.into(),
    }
}

fn failed(e: impl Into<anyhow::Error>) -> CommandError {
    CommandError {
        code: 1,
        error: e.into(),
    }
}

type CommandResult = Result<u8, CommandError>;

mod can_read;
mod check;
#[cfg(feature = "emulator")]
mod demo;
mod docs;
mod init;
mod integrations;
mod logging;
mod metadata;
mod renew;
mod run;
mod status;

use self::can_read::can_read;
use self::check::check;
#[cfg(feature = "emulator")]
use self::demo::{demo, run_emulator};
use self::docs::{completions, man};
use self::init::init;
use self::integrations::{stunnel_config, swanctl_config};
use self::logging::init_logging;
use self::metadata::{iam_token, instance, token};
use self::renew::renew;
use self::run::run_daemon;
use self::status::show_status;

#[cfg(feature = "emulator")]
pub use self::demo::shutdown_signal;

/// Entry point for `main`: sets up logging and a runtime, runs the command.
pub fn main(cli: Cli) -> ExitCode {
    init_logging(&cli);
    let runtime = match cli.command {
        // The emulator serves concurrent clients; everything else is one task at a time, and
        // a single thread keeps the daemon's footprint small.
        #[cfg(feature = "emulator")]
        Command::Emulator(_) | Command::Demo(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "eit-certd: cannot start the async runtime: {e}"
            );
            return ExitCode::from(1);
        }
    };
    // Every line of a command in the chosen format: with JSON logs the final error is a JSON
    // line too, not plain text in the middle of the stream.
    let json = cli.log_format == LogFormat::Json;
    let result = runtime.block_on(dispatch(cli));
    // A key being generated on a blocking thread must not hold up the exit (SIGTERM → gone
    // within 2 s); it is freed with the process.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(CommandError { code, error }) if json => {
            tracing::error!(exit_code = code, "{}", render(&error));
            ExitCode::from(code)
        }
        Err(CommandError { code, error }) => {
            let _ = writeln!(std::io::stderr(), "eit-certd: {}", render(&error));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, each cause only if the text so far does not already say it (our
/// error types put their cause into their own message; anyhow contexts do not).
fn render(error: &anyhow::Error) -> String {
    // Our errors carry their cause in their own message and never in `source()` (the rule in
    // lib.rs), so the chain holds each cause once: anyhow's contexts, then our error.
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

async fn dispatch(cli: Cli) -> CommandResult {
    match cli.command {
        Command::Run(ref args) => run_daemon(&cli.config, args).await,
        Command::Renew(ref args) => renew(&cli.config, args).await,
        Command::Status(ref args) => show_status(&cli.config, args),
        Command::Check(ref args) => check(&cli.config, args).await,
        Command::Init(ref args) => init(args.output.as_deref().unwrap_or(&cli.config)),
        Command::Token(ref args) => token(&cli.config, args).await,
        Command::IamToken(ref args) => iam_token(&cli.config, args).await,
        Command::Instance(ref args) => instance(&cli.config, args).await,
        Command::StunnelConfig(ref args) => stunnel_config(&cli.config, args),
        Command::SwanctlConfig(ref args) => swanctl_config(&cli.config, args),
        Command::CanRead(ref args) => can_read(args),
        Command::Completions(ref args) => completions(args),
        Command::Man => man(),
        #[cfg(feature = "emulator")]
        Command::Emulator(args) => run_emulator(args).await,
        #[cfg(feature = "emulator")]
        Command::Demo(ref args) => demo(args).await,
    }
}

fn load_config(path: &Path) -> Result<Config, CommandError> {
    Config::load(path).map_err(usage)
}

fn open_store(config: &Config) -> Result<Store, CommandError> {
    Store::from_config(&config.output).map_err(usage)
}

/// For the metadata commands, which are useful before anything is configured: a missing file
/// means the defaults. A file that exists must be valid.
fn config_or_defaults(path: &Path) -> Result<Config, CommandError> {
    if !path.exists() {
        tracing::debug!(path = %path.display(), "no config file; using the defaults");
        return Config::parse("", path).map_err(usage);
    }
    load_config(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_shown_once() {
        let io = std::io::Error::other("disk on fire");
        let store = crate::store::StoreError::Io {
            action: "write",
            path: "/o/key.pem".into(),
            cause: io,
        };
        let text = render(&anyhow::Error::from(store));
        assert_eq!(text.matches("disk on fire").count(), 1, "{text}");
        let ctx = anyhow::Error::from(std::io::Error::other("denied")).context("cannot create /x");
        assert_eq!(render(&ctx), "cannot create /x: denied");
        // The rule in lib.rs: a cause is in the message, never in `source()`.
        let io = || std::io::Error::other("disk on fire");
        let read = crate::files::ReadError::Io {
            path: "/o/cert.pem".into(),
            cause: io(),
        };
        let errors: Vec<Box<dyn std::error::Error + Send + Sync>> = vec![
            Box::new(crate::config::ConfigError::Read {
                path: "/c".into(),
                cause: crate::files::ReadError::Io {
                    path: "/c".into(),
                    cause: io(),
                },
            }),
            Box::new(crate::store::lock::LockError::Io {
                path: "/o/.lock".into(),
                cause: io(),
            }),
            Box::new(crate::store::StoreError::from(read)),
            Box::new(crate::renew::RenewError::from(
                crate::store::StoreError::Io {
                    action: "write",
                    path: "/o/key.pem".into(),
                    cause: io(),
                },
            )),
        ];
        for e in errors {
            assert!(e.source().is_none(), "{e} has a source");
            let text = render(&anyhow::anyhow!(e).context("context"));
            assert_eq!(text.matches("disk on fire").count(), 1, "{text}");
        }
    }
}
