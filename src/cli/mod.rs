//! Command-line interface types (clap derive). Parsing only; `commands` does the work.

pub mod commands;
pub mod manpage;

#[cfg(feature = "emulator")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::DEFAULT_PATH;
#[cfg(feature = "emulator")]
use crate::emulator::{Fault, Scope};

/// `--version`: the package version and the OpenSSL the binary runs with: the system's libssl,
/// or the one built in by the `vendored-openssl` feature (the portable build), which only a
/// new eit-certd release updates (docs/portable.md). `-V` and the man page's title line keep
/// the plain version.
fn long_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        let linked = if cfg!(feature = "vendored-openssl") {
            "built in"
        } else {
            "system library"
        };
        format!(
            "{} ({}, {linked})",
            env!("CARGO_PKG_VERSION"),
            openssl::version::version()
        )
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "eit-certd",
    version,
    long_version = long_version(),
    about = "Keeps the instance identity certificate for File Storage encryption in transit fresh on disk",
    long_about = "eit-certd requests instance identity certificates from the VPC instance metadata \
                  service, validates them, installs key + certificate + chain atomically for \
                  stunnel and NFS over TLS (tlshd), and renews them before they expire."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "EIT_CERTD_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,

    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only warnings and errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: renew before expiry, forever. SIGHUP reloads the config, SIGUSR1
    /// renews now, SIGTERM/SIGINT stop it.
    Run(RunArgs),
    /// Renew once now, then exit. Without --force, does nothing while the installed set is
    /// valid and not yet due.
    Renew(RenewArgs),
    /// Show the installed certificate, its health, whether a daemon runs, the last attempt
    /// and the next renewal. Exit 0 valid, 1 renewal due or degraded, 2 the config does not
    /// load, 3 expired, missing or broken (--monitoring-plugin: 0/1/2/3 OK/WARNING/CRITICAL/
    /// UNKNOWN).
    Status(StatusArgs),
    /// Check the configuration: keys, paths, permissions, hook programs; with --online also
    /// fetch a token and do a certificate round trip without installing anything.
    Check(CheckArgs),
    /// Write a commented configuration file with the defaults.
    Init(InitArgs),
    /// Print an instance identity access token (stdout only; never logged).
    Token(TokenArgs),
    /// Print an IAM access token for a trusted profile (stdout only; never logged).
    IamToken(IamTokenArgs),
    /// Show this instance's metadata (GET /metadata/v1/instance).
    Instance(InstanceArgs),
    /// Print a stunnel client service section that uses the installed files.
    StunnelConfig(StunnelConfigArgs),
    /// Print a swanctl connection (IPsec, IKEv2) to a File Storage mount target that
    /// authenticates with the certificate at the [output.swanctl] path.
    SwanctlConfig(SwanctlConfigArgs),
    /// Check that a running process (a consumer such as stunnel after it dropped to its
    /// user) could open each PATH for reading: search permission on every directory on the
    /// way, read permission on the file. Exit 0 yes, 1 no (the first obstacle is named), 2
    /// bad usage or no such process. The shipped hooks ask this before they signal.
    CanRead(CanReadArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man,
    /// Run the metadata service emulator (for demos and offline tests).
    #[cfg(feature = "emulator")]
    Emulator(EmulatorArgs),
    /// A tour: an embedded emulator, a first renewal into a temp dir, and its status.
    #[cfg(feature = "emulator")]
    Demo(DemoArgs),
}

#[cfg(feature = "emulator")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's directory (config, certificates, log) to look around afterwards; its
    /// last certificate lives an hour. Without it the directory is removed at the end.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Write Prometheus metrics to this file after every attempt (overrides
    /// output.metrics_file).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also reach the metadata service: a token and a certificate round trip (nothing is
    /// installed).
    #[arg(long)]
    pub online: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write it (default: the --config path); `-` for standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Token lifetime (5s to 1h).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub lifetime: Duration,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct IamTokenArgs {
    /// Trusted profile ID, e.g. Profile-8dd84246-….
    #[arg(long)]
    pub profile_id: Option<String>,
    /// Trusted profile CRN.
    #[arg(long)]
    pub profile_crn: Option<String>,
}

#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// The whole JSON document instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StunnelConfigArgs {
    /// The share's mount target and stunnel port on the file server, e.g. 10.240.64.5:20049.
    /// An IP address is checked against the server's certificate (stunnel `checkIP`), a
    /// name with `checkHost`.
    #[arg(long)]
    pub connect: String,
    /// Local address NFS mounts through.
    #[arg(long, default_value = "127.0.0.1:20049")]
    pub accept: String,
    /// CA bundle that verifies the file server (stunnel `CAfile`). The default system bundle
    /// trusts every public CA; name the CA that signs the File Storage mount targets'
    /// certificates instead, e.g. /etc/stunnel/file-storage-ca.pem.
    #[arg(long, default_value = crate::integrations::stunnel::SYSTEM_CA_BUNDLE)]
    pub ca_file: PathBuf,
    /// Name the server's certificate must carry (stunnel `checkHost`), instead of the
    /// --connect host or address.
    #[arg(long)]
    pub check_host: Option<String>,
    /// Service section name; also names the pid file, /run/stunnel4/NAME.pid.
    #[arg(long, default_value = "eit-nfs")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct SwanctlConfigArgs {
    /// The mount target's IP address (IPv4 or IPv6), e.g. 10.240.64.5.
    #[arg(long)]
    pub remote: std::net::IpAddr,
    /// Connection name (default: IBM's, ibmshare-ipsec-to-ADDRESS, the address with dashes
    /// for its dots and colons).
    #[arg(long, value_parser = parse_connection_name)]
    pub name: Option<String>,
}

fn parse_connection_name(s: &str) -> Result<String, String> {
    crate::integrations::swanctl::validate_connection_name(s).map(|()| s.to_string())
}

#[derive(Debug, Args)]
pub struct CanReadArgs {
    /// The process whose user, group and supplementary groups (/proc/PID/status) count.
    #[arg(long)]
    pub pid: u32,
    /// Absolute paths to check, in order.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Renew even if the installed certificate is valid and not yet due. With a daemon
    /// running, asks it to renew now (SIGUSR1) and waits for its result.
    #[arg(long)]
    pub force: bool,
    /// The whole pipeline (token, key, CSR, certificate request, validation) without the
    /// install: nothing is written (as `check --online`).
    #[arg(long, conflicts_with = "force")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Exit with the monitoring-plugin convention (Nagios, Icinga, Sensu): 0 OK, 1 WARNING
    /// (renewal due, degraded), 2 CRITICAL (expired, missing, broken), 3 UNKNOWN.
    #[arg(long)]
    pub monitoring_plugin: bool,
}

#[cfg(feature = "emulator")]
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on. Loopback by default: the emulator hands out tokens to anyone
    /// who can reach it.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write `endpoint` (base URL) and `ca.pem` (the root CA) here.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Serve https with a certificate for localhost, 127.0.0.1 and api.metadata.cloud.ibm.com,
    /// signed by the emulator's root.
    #[arg(long)]
    pub tls: bool,
    /// Misbehave on purpose, to test clients (--help lists the modes).
    #[arg(long, default_value = "ok", value_parser = parse_fault, long_help = fault_help())]
    pub fault: Fault,
    /// Cap issued certificate lifetimes (reported honestly in expires_in), e.g. "20s".
    #[arg(long, value_parser = parse_duration)]
    pub max_lifetime: Option<Duration>,
    /// Instance ID written into issued certificates' CN.
    #[arg(long, default_value = crate::emulator::DEFAULT_INSTANCE_ID)]
    pub instance_id: String,
}

/// `--fault`'s long help: every mode with its description, and which calls it applies to.
#[cfg(feature = "emulator")]
fn fault_help() -> String {
    let width = Fault::ALL.iter().map(|f| f.name().len()).max().unwrap_or(0);
    let mut help = String::from(
        "Misbehave on purpose, to test clients. Modes that change status or transport apply \
         to every API call (token calls included) and each call uses up one from a count; the \
         others change only POST .../certificates, and only that call uses up a count. Switch \
         at run time with PUT /emulator/v1/fault {\"mode\": \"MODE\", \"count\": N} from loopback.\n",
    );
    for (heading, scope) in [
        ("Every API call:", Scope::EveryCall),
        ("Certificate calls only:", Scope::CertificateCall),
    ] {
        help.push_str(&format!("\n{heading}\n"));
        for f in Fault::ALL.iter().filter(|f| f.scope() == scope) {
            help.push_str(&format!("  {:width$}  {}\n", f.name(), f.description()));
        }
    }
    help.truncate(help.trim_end().len());
    help
}

#[cfg(feature = "emulator")]
fn parse_fault(s: &str) -> Result<Fault, String> {
    s.parse::<Fault>().map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write it like \"20s\" or \"5m\""))
}
