//! Logging set-up: the filter from `-v`/`-q`/`RUST_LOG`, text or JSON lines on stderr, colour
//! and timestamps by where stderr goes, and the demo's log file.

#[cfg(feature = "emulator")]
use std::io::Write;

#[cfg(feature = "emulator")]
use crate::cli::Command;
use crate::cli::{Cli, LogFormat};

pub(super) fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("eit_certd={default},warn"))
    });
    // The file watch's own crates log every inotify event at trace level: with `RUST_LOG=trace`
    // and stderr in a watched directory, each line was an event that logged a line (millions
    // a second, signals unserved). What they say is never needed to run eit-certd; a target
    // named explicitly in RUST_LOG still wins over these.
    let explicit = std::env::var("RUST_LOG").unwrap_or_default();
    for quiet in ["notify", "inotify", "mio"] {
        if !explicit.contains(quiet) {
            if let Ok(directive) = format!("{quiet}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let style = LogStyle::from_env();
    // The demo's numbered steps read cleanly only without log lines between them: its log
    // goes to demo.log in its directory, unless -v asks for it on stderr.
    #[cfg(feature = "emulator")]
    let demo_to_file = matches!(cli.command, Command::Demo(_)) && cli.verbose == 0;
    #[cfg(not(feature = "emulator"))]
    let demo_to_file = false;
    let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr);
    #[cfg(feature = "emulator")]
    let writer = if demo_to_file {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(DemoLog)
    } else {
        writer
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(style.colour && !demo_to_file);
    // journald stamps every line itself; a second timestamp only clutters `journalctl`.
    let _ = match (cli.log_format, style.timestamps) {
        (LogFormat::Json, true) => builder.json().try_init(),
        (LogFormat::Json, false) => builder.json().without_time().try_init(),
        (LogFormat::Text, true) => builder.try_init(),
        (LogFormat::Text, false) => builder.without_time().try_init(),
    };
}

/// The demo's log file, once its directory exists; lines logged before that are dropped.
#[cfg(feature = "emulator")]
pub(super) static DEMO_LOG: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Writes log lines to [`DEMO_LOG`].
#[cfg(feature = "emulator")]
struct DemoLog;

#[cfg(feature = "emulator")]
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DemoLog {
    type Writer = Box<dyn Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match DEMO_LOG.get() {
            Some(file) => Box::new(file),
            None => Box::new(std::io::sink()),
        }
    }
}

/// How log lines look, decided by where stderr goes.
struct LogStyle {
    /// ANSI colour: only on a terminal, and never when `NO_COLOR` is set (no-color.org).
    colour: bool,
    /// Own timestamps: not when stderr is journald's stream (`JOURNAL_STREAM`), which adds them.
    timestamps: bool,
}

impl LogStyle {
    fn from_env() -> Self {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        LogStyle {
            colour: !no_color && std::io::stderr().is_terminal(),
            timestamps: std::env::var_os("JOURNAL_STREAM").is_none(),
        }
    }
}
