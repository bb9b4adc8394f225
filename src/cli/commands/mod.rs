//! What each subcommand does, at the edge between the library and the user: load the config,
//! call the library, print results to stdout and turn errors into exit codes.
//!
//! Exit codes (everywhere): 0 ok, 1 the operation failed (service, validation, I/O),
//! 2 usage or configuration error; `status` also uses 3 for expired or missing.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use time::OffsetDateTime;

use crate::cli::{
    CanReadArgs, CheckArgs, Cli, Command, CompletionsArgs, IamTokenArgs, InstanceArgs, LogFormat,
    RenewArgs, RunArgs, StatusArgs, StunnelConfigArgs, SwanctlConfigArgs, TokenArgs,
};
#[cfg(feature = "emulator")]
use crate::cli::{DemoArgs, EmulatorArgs};
use crate::config::Config;
#[cfg(feature = "emulator")]
use crate::emulator;
use crate::metadata::client::Client;
use crate::renew::schedule::Policy;
use crate::renew::{AttemptOutcome, KeySource, Renewed, Renewer};
use crate::report::status;
#[cfg(feature = "emulator")]
use crate::store;
use crate::store::lock::DirLock;
use crate::store::state::State;
use crate::store::Store;
use crate::text::rfc3339;

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

fn init_logging(cli: &Cli) {
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
static DEMO_LOG: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

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

fn load_config(path: &Path) -> Result<Config, CommandError> {
    Config::load(path).map_err(usage)
}

fn open_store(config: &Config) -> Result<Store, CommandError> {
    Store::from_config(&config.output).map_err(usage)
}

async fn run_daemon(config_path: &Path, args: &RunArgs) -> CommandResult {
    let daemon = crate::daemon::Daemon::start(config_path, args.metrics_file.clone())
        .await
        .map_err(|e| if e.is_usage() { usage(e) } else { failed(e) })?;
    daemon.run(std::future::pending()).await.map_err(failed)?;
    Ok(0)
}

async fn renew(config_path: &Path, args: &RenewArgs) -> CommandResult {
    let config = load_config(config_path)?;
    crate::report::check::warn_about_config_file(config_path);
    if args.dry_run {
        // certbot's spelling of `check --online`: the pipeline, nothing installed.
        let report = crate::report::check::online(&config)
            .await
            .map_err(failed)?;
        out!("{report}");
        return Ok(0);
    }
    let store = open_store(&config)?;
    store.check_safe().map_err(usage)?;
    let _lock = match DirLock::acquire(store.dir()) {
        Ok(lock) => lock,
        Err(crate::store::lock::LockError::Held {
            holder: Some(pid), ..
        }) if args.force => return renew_through_daemon(&store, pid).await,
        Err(e) => return Err(failed(e)),
    };
    for note in store.repair_modes() {
        tracing::warn!("{note}");
    }
    // Before anything is requested: a swanctl path that is not ours is refused here.
    let swanctl = crate::integrations::swanctl::Layout::from_config(&config);
    let linked = match &swanctl {
        Some(layout) => {
            layout
                .ensure(&store)
                .map_err(|e| if e.is_config() { usage(e) } else { failed(e) })?
        }
        None => Vec::new(),
    };
    let policy = Policy::from(&config.certificate);
    let now = OffsetDateTime::now_utc();
    if !args.force {
        if let Ok(Some(current)) = store.read_current() {
            let leaf = &current.leaf;
            if current.is_usable(now) && !policy.is_due(leaf.not_before, leaf.not_after, now) {
                out!(
                    "nothing to do: serial {} is valid until {}, renewal due at {} (use --force to renew now)",
                    leaf.serial_hex,
                    rfc3339(leaf.not_after),
                    rfc3339(policy.renewal_point(leaf.not_before, leaf.not_after))
                );
                for change in &linked {
                    out!(
                        "linked {} to the installed set; have charon load it (swanctl --load-creds, or the swanctl-reload hook)",
                        change.path.display()
                    );
                }
                return Ok(0);
            }
        }
    }
    let client = Client::connect(&config.metadata).map_err(failed)?;
    let renewer = Renewer::new(config, client, store).map_err(usage)?;
    let outcome = renew_with_state(&renewer).await?;
    print_renewed(&outcome.renewed);
    Ok(report_failed_hooks(&outcome.hooks))
}

/// Names each hook that failed for the set just installed; the exit code: 1 when one did.
/// Installed, but a consumer may still present the old certificate: not a success for a
/// script that mounts next.
fn report_failed_hooks<'a>(
    hooks: impl IntoIterator<Item = &'a crate::store::state::HookResult>,
) -> u8 {
    let mut code = 0;
    for hook in hooks.into_iter().filter(|h| !h.ok) {
        tracing::warn!(
            hook = %hook.name,
            "hook {} failed (the new certificate is installed, but that consumer may not use \
             it): {}",
            hook.name,
            hook.detail
        );
        code = 1;
    }
    code
}

/// `renew --force` while a daemon holds the lock: the daemon renews (SIGUSR1, as `systemctl
/// kill -s USR1 eit-certd`), and this waits for the attempt it records in state.json.
async fn renew_through_daemon(store: &Store, pid: u32) -> CommandResult {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.trim().starts_with("eit-certd") {
        return Err(failed(anyhow::anyhow!(
            "{} is locked by pid {pid}, which is not eit-certd ({}); not signalling it",
            store.dir().display(),
            comm.trim()
        )));
    }
    let before = State::load(store.dir()).last_attempt.map(|a| a.at);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .map_err(|e| {
        failed(anyhow::anyhow!(
            "cannot ask the daemon (pid {pid}) to renew: {e}"
        ))
    })?;
    tracing::info!(
        pid,
        "the daemon (pid {pid}) holds {}; asked it to renew now, waiting for its result",
        store.dir().display()
    );
    // Its attempt, hooks included, is bounded by the request timeout and the hooks' timeouts;
    // an hour covers any configuration, and a daemon that dies meanwhile is noticed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let state = State::load(store.dir());
        let done = state.last_attempt.as_ref().filter(|a| Some(a.at) != before);
        // A success is recorded before its hooks run: wait until each hook owed for the new
        // serial has a result for it (a failed one with `retry` stays owed, with a result).
        let hooks_running = |serial: &Option<String>| {
            state.hooks_owed.as_ref().is_some_and(|owed| {
                Some(&owed.serial) == serial.as_ref()
                    && owed.names.iter().any(|n| {
                        n != crate::store::state::SWANCTL_LINKS
                            && !state
                                .hooks
                                .iter()
                                .any(|h| &h.name == n && Some(&h.serial) == serial.as_ref())
                    })
            })
        };
        if let Some(attempt) = done.filter(|a| a.error.is_some() || !hooks_running(&a.serial)) {
            if let Some(error) = &attempt.error {
                return Err(failed(anyhow::anyhow!(
                    "the daemon's renewal failed: {error}"
                )));
            }
            let serial = attempt.serial.clone().unwrap_or_default();
            out!("installed serial {serial} (renewed by the daemon, pid {pid})");
            return Ok(report_failed_hooks(
                state.hooks.iter().filter(|h| h.serial == serial),
            ));
        }
        if tokio::time::Instant::now() > deadline || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(failed(anyhow::anyhow!(
                "the daemon (pid {pid}) did not record a renewal; see its log (journalctl -u \
                 eit-certd)"
            )));
        }
    }
}

/// One attempt with a fresh key and the hooks, recorded in `state.json` (and the metrics file)
/// whatever the outcome.
async fn renew_with_state(renewer: &Renewer) -> Result<AttemptOutcome, CommandError> {
    let config = renewer.config();
    let dir = renewer.store().dir().to_path_buf();
    let mut state = State::load(&dir);
    let mut keys = KeySource::new(config.certificate.key_bits.0);
    let result = renewer.attempt(&mut keys, &mut state, |_| {}).await;
    if let Ok(outcome) = &result {
        let leaf = &outcome.renewed.verified.leaf;
        let policy = Policy::from(&config.certificate);
        state.next_renewal = Some(policy.next_renewal(leaf.not_before, leaf.not_after, 0.0));
    }
    if let Err(e) = state.save(&dir) {
        tracing::warn!("cannot record the attempt in state.json: {e}");
    }
    if let Some(path) = &config.output.metrics_file {
        let leaf = result.as_ref().ok().map(|o| &o.renewed.verified.leaf);
        let ca = result
            .as_ref()
            .map(|o| crate::pki::ca_expiry::CaExpiry::from_verified(&o.renewed.verified))
            .unwrap_or_default();
        if let Err(e) = crate::report::metrics::write(path, &state, leaf, &ca) {
            tracing::warn!("cannot write the metrics file: {e}");
        }
    }
    result.map_err(failed)
}

fn print_renewed(r: &Renewed) {
    let leaf = &r.verified.leaf;
    out!(
        "installed serial {} for {} (valid until {}, {}) in {}",
        leaf.serial_hex,
        leaf.subject,
        rfc3339(leaf.not_after),
        humantime::format_duration(leaf.lifetime()),
        r.generation.dir.display()
    );
    if let Some(prev) = &r.previous {
        out!("replaced serial {}", prev.serial_hex);
    }
}

fn show_status(config_path: &Path, args: &StatusArgs) -> CommandResult {
    // A config that does not load (a typo saved into it) must not hide the installed set: the
    // report is made with the defaults, says so, and the exit code says the config is broken.
    let (config, config_problem) = match load_config(config_path) {
        Ok(c) => (c, None),
        Err(CommandError { error, .. }) if config_path.exists() => {
            let mut defaults = Config::parse("", config_path).map_err(usage)?;
            // Where the set is, if the broken file still says (a typo elsewhere in it).
            if let Some(dir) = salvage_output_dir(config_path) {
                defaults.output.dir = dir;
            }
            (defaults, Some(crate::text::one_line(&render(&error))))
        }
        Err(f) => return Err(f),
    };
    let store = match open_store(&config) {
        Ok(s) => s,
        Err(f) if args.monitoring_plugin => {
            out!("UNKNOWN: {}", render(&f.error));
            return Ok(3);
        }
        Err(f) => return Err(f),
    };
    let now = OffsetDateTime::now_utc();
    let mut report = status::gather(&store, &Policy::from(&config.certificate), now);
    report.daemon = Some(crate::store::lock::holder(store.dir()));
    report.swanctl = crate::integrations::swanctl::Layout::from_config(&config).map(|l| l.status());
    report.set_ca(&store, &config.certificate, now);
    report.spare = Some(crate::store::spare::Spare::new(store.dir()).state(&config));
    let serial = report.installed.as_ref().map(|i| i.serial.clone());
    report.consumers = crate::report::consumers::survey(&config, serial.as_deref());
    report.assess(config_problem.as_deref());
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(failed)?;
        out!("{json}");
    } else {
        out_raw!("{}", report.render_text(now));
    }
    Ok(match (args.monitoring_plugin, &config_problem) {
        (true, Some(_)) => 2,
        (true, None) => report.plugin_exit_code(),
        (false, Some(_)) => 2,
        (false, None) => report.health.exit_code(),
    })
}

/// `output.dir` from a config file that does not load as a whole, when the file is still TOML
/// and the key itself is sound.
fn salvage_output_dir(path: &Path) -> Option<crate::config::OutputDir> {
    let text = crate::files::read_to_string(
        path,
        crate::files::Links::Follow,
        crate::files::limit::CONFIG,
    )
    .ok()?;
    let table: toml::Table = text.parse().ok()?;
    let dir = table.get("output")?.get("dir")?.as_str()?.to_string();
    crate::config::OutputDir::try_from(dir).ok()
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

async fn check(config_path: &Path, args: &CheckArgs) -> CommandResult {
    let config = load_config(config_path)?;
    let mut problems = crate::report::check::config_file(config_path);
    problems.extend(crate::report::check::offline(&config));
    for p in &problems {
        out!("problem: {p}");
    }
    if !problems.is_empty() {
        return Err(usage(anyhow::anyhow!(
            "{}: {} problem(s) found",
            config_path.display(),
            problems.len()
        )));
    }
    out!("{}: configuration OK", config_path.display());
    if args.online {
        let report = crate::report::check::online(&config)
            .await
            .map_err(failed)?;
        out!("{report}");
    }
    Ok(0)
}

fn init(path: &Path) -> CommandResult {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    // `-` is standard output, as for every other Unix tool (it wrote a file named "-").
    if path == Path::new("-") {
        out_raw!("{}", crate::config::EXAMPLE);
        return Ok(0);
    }
    // A fresh machine has no /etc/eit-certd/: the missing-config error sends people here.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| {
                usage(anyhow::anyhow!(
                    "cannot create the directory {}: {e}",
                    parent.display()
                ))
            })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        // Not secret (no key in it), and `status`/`check` without root read it: 0644, not
        // whatever the umask leaves.
        .mode(0o644)
        .open(path)
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "; it is left as it is (edit it, or pass --output for a new file)"
            } else {
                ""
            };
            usage(anyhow::anyhow!(
                "cannot create {}: {e}{hint}",
                path.display()
            ))
        })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(crate::config::EXAMPLE.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(failed)?;
    out!(
        "wrote {}; check it with `eit-certd --config {} check`",
        path.display(),
        path.display()
    );
    Ok(0)
}

async fn metadata_client(config_path: &Path) -> Result<Client, CommandError> {
    let config = config_or_defaults(config_path)?;
    Client::connect(&config.metadata).map_err(failed)
}

async fn token(config_path: &Path, args: &TokenArgs) -> CommandResult {
    if !(5..=3600).contains(&args.lifetime.as_secs()) {
        return Err(usage(anyhow::anyhow!(
            "--lifetime must be between 5s and 1h (the service's range)"
        )));
    }
    let client = metadata_client(config_path).await?;
    let token = client.new_token(args.lifetime).await.map_err(failed)?;
    out!("{}", token.expose());
    Ok(0)
}

async fn iam_token(config_path: &Path, args: &IamTokenArgs) -> CommandResult {
    let client = metadata_client(config_path).await?;
    let profile = crate::metadata::api::TrustedProfileRef {
        id: args.profile_id.clone(),
        crn: args.profile_crn.clone(),
    };
    let token = client.iam_token(profile).await.map_err(failed)?;
    out!("{}", token.expose());
    Ok(0)
}

async fn instance(config_path: &Path, args: &InstanceArgs) -> CommandResult {
    let client = metadata_client(config_path).await?;
    let instance = client.instance().await.map_err(failed)?;
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&instance).map_err(failed)?
        );
    } else {
        out!("id    {}", instance.id);
        out!("name  {}", instance.name);
        out!("zone  {}", instance.zone.name);
        if !instance.crn.is_empty() {
            out!("crn   {}", instance.crn);
        }
    }
    Ok(0)
}

fn stunnel_config(config_path: &Path, args: &StunnelConfigArgs) -> CommandResult {
    let config = config_or_defaults(config_path)?;
    let section = crate::integrations::stunnel::Section {
        name: &args.name,
        accept: &args.accept,
        connect: &args.connect,
        ca_file: &args.ca_file,
        check_host: args.check_host.as_deref(),
        output_dir: &config.output.dir,
    };
    // Checked in full before anything is printed: a half-written section is worse than none.
    let text = section.render().map_err(usage)?;
    out_raw!("{text}");
    Ok(0)
}

fn swanctl_config(config_path: &Path, args: &SwanctlConfigArgs) -> CommandResult {
    let config = config_or_defaults(config_path)?;
    let layout = match crate::integrations::swanctl::Layout::from_config(&config) {
        Some(layout) => layout,
        None => {
            eprintln!(
                "eit-certd: note: {} has no [output.swanctl] table, so eit-certd does not keep \
                 the certificate below current yet; add one (see README, \"Zonal shares\")",
                config_path.display()
            );
            let mut with_table = config.clone();
            with_table.output.swanctl = Some(Default::default());
            crate::integrations::swanctl::Layout::from_config(&with_table).expect("table set")
        }
    };
    let connection = crate::integrations::swanctl::Connection {
        remote: args.remote,
        name: args
            .name
            .clone()
            .unwrap_or_else(|| crate::integrations::swanctl::default_connection_name(args.remote)),
        cert: layout.path(crate::integrations::swanctl::Role::Cert),
    };
    out_raw!("{}", connection.render(layout.dir()));
    Ok(0)
}

/// `can-read`: 0 when the process could read every path, 1 naming the first it could not.
fn can_read(args: &CanReadArgs) -> CommandResult {
    let creds = crate::report::access::Credentials::of_process(args.pid).map_err(usage)?;
    for path in &args.paths {
        match creds.can_read(path) {
            Ok(()) => {}
            Err(e @ crate::report::access::AccessError::Relative { .. }) => return Err(usage(e)),
            Err(e) => {
                return Err(failed(anyhow::Error::from(e).context(format!(
                    "process {} (uid {}, gid {})",
                    args.pid, creds.uid, creds.gid
                ))))
            }
        }
    }
    Ok(0)
}

fn completions(args: &CompletionsArgs) -> CommandResult {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut text = Vec::new();
    clap_complete::generate(args.shell, &mut command, "eit-certd", &mut text);
    out_raw!("{}", String::from_utf8_lossy(&text));
    Ok(0)
}

fn man() -> CommandResult {
    use clap::CommandFactory;
    let mut text = Vec::new();
    crate::cli::manpage::render(Cli::command(), &mut text).map_err(failed)?;
    out_raw!("{}", String::from_utf8_lossy(&text));
    Ok(0)
}

#[cfg(feature = "emulator")]
async fn run_emulator(args: EmulatorArgs) -> CommandResult {
    let options = emulator::Options {
        listen: args.listen,
        tls: args.tls,
        state_dir: args.state_dir,
        max_lifetime: args.max_lifetime,
        fault: args.fault,
        instance_id: args.instance_id,
    };
    let running = emulator::start(options).await.map_err(failed)?;
    // The first stdout line is the contract: scripts read the URL from it.
    out!("{}", running.base_url());
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    running.shutdown().await;
    Ok(0)
}

/// Resolves on SIGINT or SIGTERM.
#[cfg(feature = "emulator")]
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How long the demo's emulator lets certificates live, so rotations happen while you watch.
#[cfg(feature = "emulator")]
const DEMO_LIFETIME: std::time::Duration = std::time::Duration::from_secs(9);
#[cfg(feature = "emulator")]
const DEMO_ROTATIONS: usize = 3;

#[cfg(feature = "emulator")]
async fn demo(args: &DemoArgs) -> CommandResult {
    let root = tempfile::Builder::new()
        .prefix("eit-certd-demo-")
        .tempdir()
        .context("cannot create a temporary directory")
        .map_err(failed)?
        .keep();
    let log_path = root.join("demo.log");
    if let Ok(file) = std::fs::File::create(&log_path) {
        let _ = DEMO_LOG.set(file);
    }
    let result = demo_tour(&root, args.keep).await;
    match &result {
        // A failed tour keeps everything: the log says what went wrong.
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "eit-certd demo: kept {} for a look; its log is {}",
                root.display(),
                log_path.display()
            );
        }
        Ok(_) if args.keep => {}
        Ok(_) => {
            if let Err(e) = std::fs::remove_dir_all(&root) {
                tracing::warn!("cannot remove {}: {e}", root.display());
            }
        }
    }
    result
}

#[cfg(feature = "emulator")]
async fn demo_tour(root: &Path, keep: bool) -> CommandResult {
    out!("eit-certd demo: everything goes under {}", root.display());
    if keep {
        out!("   (--keep: it stays there; the log is demo.log)");
    } else {
        out!("   (removed at the end; `eit-certd demo --keep` keeps it; `-v` shows the log here)");
    }
    let emulator_dir = root.join("emulator");
    let running = emulator::start(emulator::Options {
        state_dir: Some(emulator_dir.clone()),
        max_lifetime: Some(DEMO_LIFETIME),
        ..emulator::Options::default()
    })
    .await
    .map_err(failed)?;
    out!(
        "1. started a metadata service emulator at {} (it caps certificates at {} so that you can watch rotations)",
        running.base_url(),
        humantime::format_duration(DEMO_LIFETIME)
    );

    let out = root.join("out");
    let config_path = root.join("config.toml");
    std::fs::write(&config_path, demo_config(running.base_url(), &out))
        .with_context(|| format!("cannot write {}", config_path.display()))
        .map_err(failed)?;
    out!("   wrote {}", config_path.display());
    let config = load_config(&config_path)?;
    let store = open_store(&config)?;
    let policy = Policy::from(&config.certificate);
    let client = Client::connect(&config.metadata).map_err(failed)?;
    let renewer = Renewer::new(config.clone(), client, store.clone()).map_err(failed)?;
    out!("2. `eit-certd renew`: a token, a CSR for a fresh RSA-2048 key (the default is 4096), a certificate");
    let outcome = renew_with_state(&renewer).await?;
    for h in &outcome.hooks {
        out!("   hook {} said: {}", h.name, h.detail);
    }
    let leaf = &outcome.renewed.verified.leaf;
    let current = store.current_link();
    out!("3. validated and installed:");
    out!("     subject   {}", leaf.subject);
    out!("     issuer    {}", leaf.issuer);
    out!("     serial    {}", leaf.serial_hex);
    out!(
        "     lifetime  {} (until {})",
        humantime::format_duration(leaf.lifetime()),
        rfc3339(leaf.not_after)
    );
    for name in [
        store::KEY_FILE,
        store::CERT_FILE,
        store::CHAIN_FILE,
        store::FULLCHAIN_FILE,
        store::COMBINED_FILE,
    ] {
        out!("     file      {}", current.join(name).display());
    }

    out!("4. `eit-certd run`: the daemon renews at 2/3 of each certificate's life and runs the hook:");
    let mut daemon = crate::daemon::Daemon::start(&config_path, None)
        .await
        .map_err(failed)?;
    let mut events = daemon.events();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(daemon.run(async {
        let _ = stop_rx.await;
    }));
    let (mut rotations, mut hooks_seen) = (0, 0);
    let deadline = tokio::time::Instant::now() + DEMO_LIFETIME * (DEMO_ROTATIONS as u32 + 2);
    while rotations < DEMO_ROTATIONS || hooks_seen < rotations {
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        match event {
            Ok(Some(crate::daemon::Event::Installed {
                serial, not_after, ..
            })) => {
                rotations += 1;
                out!(
                    "     rotation {rotations}: serial {serial}, valid until {}",
                    rfc3339(not_after)
                );
            }
            Ok(Some(crate::daemon::Event::HookFinished(h))) => {
                hooks_seen += 1;
                out!("       hook {} said: {}", h.name, h.detail);
            }
            Ok(Some(crate::daemon::Event::Failed { error, .. })) => {
                out!("     attempt failed (the daemon retries): {error}");
            }
            Ok(None) | Err(_) => {
                let _ = stop_tx.send(());
                return Err(failed(anyhow::anyhow!(
                    "the daemon did not rotate the certificate in time"
                )));
            }
        }
    }
    let _ = stop_tx.send(());
    task.await
        .context("the daemon task failed")
        .map_err(failed)?
        .map_err(failed)?;

    // Certificates that live seconds make the commands below fail by the time they are
    // pasted: the last one gets the service's usual lifetime.
    running.set_max_lifetime(None);
    let outcome = renew_with_state(&renewer).await?;
    drop(renewer);
    let leaf = &outcome.renewed.verified.leaf;
    out!(
        "5. a last `eit-certd renew --force` with the service's usual lifetime ({}), so that the \
         files outlive the demo: serial {}",
        humantime::format_duration(leaf.lifetime()),
        leaf.serial_hex
    );
    for h in &outcome.hooks {
        out!("       hook {} said: {}", h.name, h.detail);
    }

    out!("6. `eit-certd status` now says:");
    let now = OffsetDateTime::now_utc();
    let report = status::gather(&store, &policy, now);
    for line in report.render_text(now).lines() {
        out!("     {line}");
    }
    running.shutdown().await;

    let cert = current.join(store::CERT_FILE);
    let inspect = [
        format!(
            "openssl x509 -in {} -noout -subject -issuer -dates -serial",
            cert.display()
        ),
        format!(
            "openssl verify -CAfile {} -untrusted {} {}",
            emulator_dir.join("ca.pem").display(),
            current.join(store::CHAIN_FILE).display(),
            cert.display()
        ),
        format!("eit-certd --config {} status", config_path.display()),
    ];
    if keep {
        out!(
            "inspect what it left (valid until {}):",
            rfc3339(leaf.not_after)
        );
        for c in &inspect {
            out!("  {c}");
        }
    } else {
        // Paths about to be removed would only fail when pasted.
        out!(
            "removed {} (`eit-certd demo --keep` keeps it, and prints `openssl x509`, `openssl \
             verify` and `eit-certd status` commands that work on it for an hour)",
            root.display()
        );
    }
    out!("next, on a VPC instance (README \"On a real VPC instance\"):");
    out!("  sudo eit-certd init              # writes /etc/eit-certd/config.toml to edit");
    out!("  sudo eit-certd check --online    # the config, and a round trip to the real service");
    out!("  sudo systemctl enable --now eit-certd && eit-certd status");
    out!("  then point the TLS client at the current/ files: README sections \"On a real VPC");
    out!("  instance\" (stunnel, NFS over TLS with tlshd) and \"Zonal shares (IPsec with strongSwan)\"");
    Ok(0)
}

#[cfg(feature = "emulator")]
fn demo_config(endpoint: &str, out: &Path) -> String {
    format!(
        r#"# Written by `eit-certd demo`.
[metadata]
endpoint = "{endpoint}"

[certificate]
key_bits = 2048
subject = {{ C = "US", O = "eit-certd demo" }}
min_remaining = "2s"
jitter = "0s"
# The demo's certificates live seconds; real ones are never renewed this often.
min_interval = "1s"

[output]
dir = "{}"

[[hooks]]
name = "announce"
command = ["/bin/sh", "-c", 'echo "new serial $EIT_SERIAL (replacing ${{EIT_PREVIOUS_SERIAL:-nothing}}), files in $EIT_CERT_DIR"']
timeout = "5s"
"#,
        out.display()
    )
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
