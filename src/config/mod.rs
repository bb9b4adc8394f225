//! The TOML configuration: parsed into typed values (`Duration`, `PathBuf`, enums) and
//! validated while parsing, so that every error names the file, the line and the key.
//!
//! Range checks live in `try_from` newtypes rather than in a later pass: that way serde hands
//! the failing value's span to `toml`, and the message can point at the offending line.

pub mod problem;
pub mod words;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use time::Date;

/// Where the configuration is read from unless `--config` or `EIT_CERTD_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/eit-certd/config.toml";

/// The metadata service's well-known address (plain http; https needs secure access enabled).
pub const DEFAULT_ENDPOINT: &str = "http://api.metadata.cloud.ibm.com";

/// The API version date we are built and tested against.
pub const DEFAULT_VERSION: &str = "2025-08-26";

/// Which path family the service is reached through (`metadata.api`). `identity` is the current
/// one (`/identity/v1/...`, required from version 2025-08-26 on); `instance_identity` is the
/// older family that many instances and docs still use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApiFamily {
    #[default]
    Identity,
    InstanceIdentity,
}

impl ApiFamily {
    /// The path prefix for token, certificate and IAM-token calls.
    pub fn prefix(self) -> &'static str {
        match self {
            ApiFamily::Identity => "/identity/v1",
            ApiFamily::InstanceIdentity => "/instance_identity/v1",
        }
    }
}

/// The first `version` date that serves instance identity tokens.
pub const MIN_VERSION: &str = "2022-03-01";

/// From this version on the service answers only the `/identity/v1` family; the older
/// `/instance_identity/v1` family needs an earlier version date (see the migration notes in
/// `shared/api/identity-operations.md`).
pub const IDENTITY_ONLY_FROM: &str = "2025-08-26";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} does not exist; create it with `eit-certd init` or pass --config", path.display())]
    Missing { path: PathBuf },
    #[error("cannot use config file: {cause}")]
    Read {
        path: PathBuf,
        cause: crate::files::ReadError,
    },
    #[error("{}:{line}: the file is not UTF-8 text (an invalid byte on this line); save it as UTF-8", path.display())]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{}:{line}: {message}\n  {line} | {snippet}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        snippet: String,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Semantic { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub metadata: MetadataConfig,
    #[serde(default)]
    pub certificate: CertificateConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
}

/// How the daemon retries after a failed attempt: capped exponential backoff, full jitter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub initial: RetryDelay,
    pub max: RetryDelay,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: RetryDelay(Duration::from_secs(5)),
            max: RetryDelay(Duration::from_secs(300)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    pub endpoint: Endpoint,
    pub version: ApiVersion,
    pub api: ApiFamily,
    pub ca_file: Option<PathBuf>,
    pub timeout: RequestTimeout,
    pub token_lifetime: TokenLifetime,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            endpoint: Endpoint::Url(DEFAULT_ENDPOINT.to_string()),
            version: ApiVersion::try_from(DEFAULT_VERSION.to_string()).expect("valid default"),
            api: ApiFamily::Identity,
            ca_file: None,
            timeout: RequestTimeout(Duration::from_secs(10)),
            token_lifetime: TokenLifetime(Duration::from_secs(300)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateConfig {
    pub lifetime: CertLifetime,
    pub key_bits: KeyBits,
    pub subject: Subject,
    pub renew_at: RenewAt,
    pub min_remaining: MinRemaining,
    pub jitter: Jitter,
    /// The shortest time between two successful renewals, whatever the certificate says: a
    /// certificate that is already nearly expired when it arrives (or lives a few seconds)
    /// would otherwise be renewed in a loop against the service.
    pub min_interval: MinInterval,
    /// A PEM file (any number of certificates) or a directory of `*.pem`/`*.crt` files whose
    /// CA certificates the chain must end at (see `pki::anchors`).
    pub trust_anchor: Option<PathBuf>,
    /// More files or directories like `trust_anchor`; the chain may end at any of them.
    pub trust_anchors: Vec<PathBuf>,
    /// Keep the key across renewals instead of generating a new one for each certificate.
    pub reuse_key: bool,
    /// Keep the next key and its signed CSR on disk (`output.dir/spare/`), so that a start
    /// over an expired set renews without generating a key. See [`crate::store::spare`].
    pub spare_key: bool,
}

impl Default for CertificateConfig {
    fn default() -> Self {
        CertificateConfig {
            lifetime: CertLifetime(Duration::from_secs(3600)),
            key_bits: KeyBits(4096),
            subject: Subject::default(),
            renew_at: RenewAt(0.66),
            min_remaining: MinRemaining(Duration::from_secs(600)),
            jitter: Jitter(Duration::from_secs(30)),
            min_interval: MinInterval(Duration::from_secs(60)),
            trust_anchor: None,
            trust_anchors: Vec::new(),
            reuse_key: false,
            spare_key: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub dir: OutputDir,
    pub group: Option<String>,
    pub keep: Keep,
    /// Prometheus textfile (node_exporter's textfile collector) rewritten after each attempt.
    pub metrics_file: Option<MetricsFile>,
    /// `[output.swanctl]`: strongSwan's credential paths kept pointing at the current set
    /// (zonal shares over IPsec); absent = off. See [`crate::integrations::swanctl`].
    pub swanctl: Option<SwanctlConfig>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: OutputDir(PathBuf::from("/var/lib/eit-certd")),
            group: None,
            keep: Keep(3),
            metrics_file: None,
            swanctl: None,
        }
    }
}

/// `[output.swanctl]`: where charon's swanctl reads the instance identity key, certificate and
/// intermediate (IBM's mount helper's names by default). eit-certd makes each path a symlink
/// to the file in `<output.dir>/current/` and refuses paths it does not own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwanctlConfig {
    /// swanctl's directory; `None`: `/etc/swanctl`, or `/etc/strongswan/swanctl` where only
    /// that exists (RHEL and its rebuilds).
    pub dir: Option<SwanctlDir>,
    /// The private key's path, relative to `dir`.
    pub key: SwanctlPath,
    /// The certificate's path, relative to `dir`.
    pub cert: SwanctlPath,
    /// The intermediate's path, relative to `dir`.
    pub chain: SwanctlPath,
    /// Take over a path that exists and is not eit-certd's (e.g. a file IBM's mount helper
    /// wrote) instead of refusing.
    pub replace_existing: bool,
}

impl Default for SwanctlConfig {
    fn default() -> Self {
        let path = |p: &str| SwanctlPath(PathBuf::from(p));
        SwanctlConfig {
            dir: None,
            key: path("private/type_ibmshare.key"),
            cert: path("x509/type_ibmshare.pem"),
            chain: path("x509ca/type_ibmshare_int.crt"),
            replace_existing: false,
        }
    }
}

/// `output.swanctl.dir`: an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SwanctlDir(pub PathBuf);

/// The characters a swanctl path may hold: `swanctl-config` writes these paths into
/// swanctl.conf, where a newline, a brace, a quote or a `#` would end the value and start
/// settings of the writer's choosing (a second connection with `auth = psk`, say).
fn swanctl_path_problem(key: &str, s: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-+/@:,=".contains(c);
    match s.chars().find(|c| !allowed(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "output.swanctl.{key} {s:?} holds {c:?}: swanctl paths may hold only letters, \
             digits and . _ - + / @ : , = (they are written into swanctl.conf)"
        )),
    }
}

impl TryFrom<String> for SwanctlDir {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        swanctl_path_problem("dir", &s)?;
        let path = PathBuf::from(&s);
        if !path.is_absolute() {
            return Err(format!(
                "output.swanctl.dir {s:?} must be an absolute path, e.g. \"/etc/swanctl\""
            ));
        }
        Ok(SwanctlDir(path))
    }
}

/// `output.swanctl.key`/`cert`/`chain`: a path inside `dir`, written relative to it, without
/// `.` or `..`, so that nothing outside swanctl's directory is ever touched.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SwanctlPath(pub PathBuf);

impl TryFrom<String> for SwanctlPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        // Which of key, cert, chain is not known here; serde names the key with the line.
        swanctl_path_problem("key/cert/chain", &s)?;
        let path = PathBuf::from(&s);
        let inside = !s.is_empty()
            && !s.ends_with('/')
            && path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(format!(
                "output.swanctl paths (key, cert, chain) must be file paths inside \
                 output.swanctl.dir, written relative to it without \".\" or \"..\" \
                 (e.g. \"private/type_ibmshare.key\"); got {s:?}"
            ));
        }
        Ok(SwanctlPath(path))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub name: String,
    pub command: HookCommand,
    #[serde(default = "default_hook_timeout")]
    pub timeout: HookTimeout,
    /// Run the hook again on the next cycle if it failed.
    #[serde(default)]
    pub retry: bool,
    /// Extra environment for the hook (hooks otherwise get only PATH and the EIT_* variables).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_hook_timeout() -> HookTimeout {
    HookTimeout(Duration::from_secs(30))
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // The administrator's path: a symlink (config management) is fine; a FIFO, a device or
        // a huge file is not.
        let bytes = crate::files::read(
            path,
            crate::files::Links::Follow,
            crate::files::limit::CONFIG,
        )
        .map_err(|cause| {
            if cause.is_not_found() {
                ConfigError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    cause,
                }
            }
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            ConfigError::NotUtf8 {
                path: path.to_path_buf(),
                line: e.as_bytes()[..valid]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1,
            }
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text`; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, snippet) = match e.span() {
                Some(span) => line_of(text, span.start),
                None => (0, String::new()),
            };
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                snippet,
                message: crate::config::words::explain(
                    text,
                    e.span().map(|s| s.start),
                    e.message(),
                ),
            }
        })?;
        config.check(path)?;
        Ok(config)
    }

    /// Cross-field rules that no single value can check on its own.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let semantic = |message: String| ConfigError::Semantic {
            path: path.to_path_buf(),
            message,
        };
        let m = &self.metadata;
        let first_identity_only = ApiVersion::parse(IDENTITY_ONLY_FROM).expect("valid constant");
        if m.api == ApiFamily::InstanceIdentity && m.version.0 >= first_identity_only {
            return Err(semantic(format!(
                "metadata.api = \"instance_identity\" is not served at metadata.version {} \
                 (from {IDENTITY_ONLY_FROM} on only /identity/v1 is); set api = \"identity\", \
                 or a version before {IDENTITY_ONLY_FROM}",
                m.version
            )));
        }
        let c = &self.certificate;
        if c.min_remaining.0 >= c.lifetime.0 {
            return Err(semantic(format!(
                "certificate.min_remaining ({}) must be shorter than certificate.lifetime ({}): \
                 otherwise every new certificate is already due for renewal",
                humantime::format_duration(c.min_remaining.0),
                humantime::format_duration(c.lifetime.0)
            )));
        }
        if self.retry.max.0 < self.retry.initial.0 {
            return Err(semantic(format!(
                "retry.max ({}) must not be shorter than retry.initial ({})",
                humantime::format_duration(self.retry.max.0),
                humantime::format_duration(self.retry.initial.0)
            )));
        }
        if let Some(s) = &self.output.swanctl {
            let paths = [("key", &s.key), ("cert", &s.cert), ("chain", &s.chain)];
            for (i, (a, pa)) in paths.iter().enumerate() {
                if let Some((b, _)) = paths[i + 1..].iter().find(|(_, pb)| pb == pa) {
                    return Err(semantic(format!(
                        "output.swanctl.{a} and output.swanctl.{b} are the same path ({}); \
                         give the key, the certificate and the intermediate a path each",
                        pa.0.display()
                    )));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for hook in &self.hooks {
            if !names.insert(hook.name.as_str()) {
                return Err(semantic(format!(
                    "hooks: the name {:?} is used twice; give each [[hooks]] entry its own name",
                    hook.name
                )));
            }
        }
        Ok(())
    }

    /// A configuration for `demo` and tests: everything default except where output goes and
    /// which service answers.
    pub fn for_endpoint(endpoint: &str, output_dir: &Path) -> Config {
        let mut config = Config {
            metadata: MetadataConfig::default(),
            certificate: CertificateConfig::default(),
            output: OutputConfig::default(),
            retry: RetryConfig::default(),
            hooks: Vec::new(),
        };
        config.metadata.endpoint = Endpoint::Url(endpoint.to_string());
        config.output.dir = OutputDir(output_dir.to_path_buf());
        config
    }
}

/// 1-based line number and the trimmed text of the line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(text.len());
    let line = text[..offset].matches('\n').count() + 1;
    let snippet = text.lines().nth(line - 1).unwrap_or("").trim().to_string();
    (line, snippet)
}

/// `endpoint`: a base URL (`http://…` or `https://…`), or `auto` to probe https, then http.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Endpoint {
    Url(String),
    Auto,
}

impl TryFrom<String> for Endpoint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Endpoint::Auto);
        }
        let url = reqwest::Url::parse(&s).map_err(|e| {
            format!("metadata.endpoint {s:?} is not a URL ({e}); use e.g. \"{DEFAULT_ENDPOINT}\"")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "metadata.endpoint {s:?} must be an http:// or https:// URL with a host, or \"auto\""
            ));
        }
        Ok(Endpoint::Url(s.trim_end_matches('/').to_string()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Url(u) => f.write_str(u),
            Endpoint::Auto => f.write_str("auto"),
        }
    }
}

/// `version`: the API date, `YYYY-MM-DD`, no earlier than 2022-03-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct ApiVersion(pub Date);

impl ApiVersion {
    pub fn parse(s: &str) -> Result<Date, String> {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(s, &fmt)
            .map_err(|_| format!("metadata.version {s:?} is not a date of the form YYYY-MM-DD"))
    }
}

impl TryFrom<String> for ApiVersion {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let date = ApiVersion::parse(&s)?;
        let min = ApiVersion::parse(MIN_VERSION).expect("valid constant");
        if date < min {
            return Err(format!(
                "metadata.version {s} is older than {}, the first version that serves instance identity tokens",
                MIN_VERSION
            ));
        }
        Ok(ApiVersion(date))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    }
}

/// Parses a humantime string (`"45m"`, `"1h 30m"`) with a message that says how to write one.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write it like \"45m\", \"90s\" or \"1h 30m\"")
    })
}

/// Declares a duration newtype whose value must fall in `[min, max]`; the key name goes into
/// the message because serde's custom errors do not carry it.
macro_rules! bounded_duration {
    ($name:ident, $key:literal, $min:expr, $max:expr, $why:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(pub Duration);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let d = parse_duration(&s).map_err(|e| format!("{}: {e}", $key))?;
                let (min, max): (Duration, Duration) = ($min, $max);
                if d < min || d > max {
                    return Err(format!(
                        "{} {s:?} is out of range: it must be between {} and {} ({})",
                        $key,
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        $why
                    ));
                }
                Ok($name(d))
            }
        }
    };
}

bounded_duration!(
    RetryDelay,
    "retry.initial/retry.max",
    Duration::from_secs(1),
    Duration::from_secs(3600),
    "the wait between attempts after a failure"
);
bounded_duration!(
    RequestTimeout,
    "metadata.timeout",
    Duration::from_secs(1),
    Duration::from_secs(300),
    "a request that takes longer is abandoned and retried"
);
bounded_duration!(
    TokenLifetime,
    "metadata.token_lifetime",
    TokenLifetime::MIN,
    TokenLifetime::MAX,
    "the service accepts 5 seconds to 1 hour"
);

impl TokenLifetime {
    /// The service's range for a token's `expires_in`, here for the config key and for
    /// `eit-certd token --lifetime` alike.
    pub const MIN: Duration = Duration::from_secs(5);
    pub const MAX: Duration = Duration::from_secs(3600);
}

bounded_duration!(
    MinRemaining,
    "certificate.min_remaining",
    Duration::ZERO,
    Duration::from_secs(86400),
    "how long before expiry a renewal happens at the latest"
);
bounded_duration!(
    Jitter,
    "certificate.jitter",
    Duration::ZERO,
    Duration::from_secs(3600),
    "a random amount by which each renewal is moved earlier"
);
bounded_duration!(
    MinInterval,
    "certificate.min_interval",
    Duration::from_secs(1),
    Duration::from_secs(3600),
    "the shortest time between two successful renewals"
);
bounded_duration!(
    HookTimeout,
    "hooks.timeout",
    Duration::from_millis(100),
    Duration::from_secs(3600),
    "the hook's process group is killed after this long"
);
bounded_duration!(
    CertLifetime,
    "certificate.lifetime",
    Duration::from_secs(300),
    Duration::from_secs(86400),
    "it is sent as expires_in; the service's default is 1h"
);

/// Declares a path newtype that must be absolute: the daemon runs with `/` as its working
/// directory, so a relative path (or an empty one) would put files wherever the command
/// happened to start. The key name goes into the message (serde's custom errors lack it).
macro_rules! absolute_path {
    ($name:ident, $key:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(pub PathBuf);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                check_absolute($key, &s).map(|()| $name(PathBuf::from(s)))
            }
        }

        impl std::ops::Deref for $name {
            type Target = Path;
            fn deref(&self) -> &Path {
                &self.0
            }
        }

        impl AsRef<Path> for $name {
            fn as_ref(&self) -> &Path {
                &self.0
            }
        }
    };
}

/// What is wrong with a path that must be absolute and printable (it ends up in log lines and
/// in config files we write for other programs, where a newline would start a new setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    Empty,
    ControlCharacter,
    Relative,
}

/// The one rule for such paths (config keys, and what `stunnel-config` writes).
pub fn absolute_path_problem(s: &str) -> Option<PathProblem> {
    if s.is_empty() {
        Some(PathProblem::Empty)
    } else if s.chars().any(char::is_control) {
        Some(PathProblem::ControlCharacter)
    } else if !Path::new(s).is_absolute() {
        Some(PathProblem::Relative)
    } else {
        None
    }
}

fn check_absolute(key: &str, s: &str) -> Result<(), String> {
    match absolute_path_problem(s) {
        None => Ok(()),
        Some(PathProblem::Empty) => Err(format!(
            "{key} is empty: give an absolute path, e.g. \"/var/lib/eit-certd\""
        )),
        Some(PathProblem::ControlCharacter) => {
            Err(format!("{key} {s:?} holds a control character"))
        }
        Some(PathProblem::Relative) => Err(format!(
            "{key} {s:?} is relative: give an absolute path (starting with /)"
        )),
    }
}

absolute_path!(OutputDir, "output.dir");
absolute_path!(MetricsFile, "output.metrics_file");

/// `key_bits`: RSA modulus size. The service refuses keys under 2048 bits; past 8192 key
/// generation takes minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct KeyBits(pub u32);

impl TryFrom<i64> for KeyBits {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        if !(2048..=8192).contains(&n) {
            return Err(format!(
                "certificate.key_bits = {n} is out of range: use 2048 to 8192 (default 4096); \
                 the service refuses keys under 2048 bits"
            ));
        }
        Ok(KeyBits(n as u32))
    }
}

/// `renew_at`: the fraction of the certificate's actual lifetime after which it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct RenewAt(pub f64);

impl TryFrom<f64> for RenewAt {
    type Error = String;
    fn try_from(x: f64) -> Result<Self, String> {
        if !(0.1..=0.95).contains(&x) {
            return Err(format!(
                "certificate.renew_at = {x} is out of range: use a fraction between 0.1 and 0.95 \
                 of the certificate's lifetime (default 0.66)"
            ));
        }
        Ok(RenewAt(x))
    }
}

/// `keep`: how many generations stay on disk, the current one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Keep(pub usize);

impl TryFrom<i64> for Keep {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        if !(1..=100).contains(&n) {
            return Err(format!(
                "output.keep = {n} is out of range: keep between 1 and 100 generations (default 3)"
            ));
        }
        Ok(Keep(n as usize))
    }
}

/// A hook's argv: at least the program; run without a shell.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct HookCommand(pub Vec<String>);

impl TryFrom<Vec<String>> for HookCommand {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        match v.first() {
            None => Err(
                "hooks.command is empty: give the program and its arguments as a list, \
                         e.g. [\"/usr/lib/eit-certd/hooks/stunnel-reload\"]"
                    .to_string(),
            ),
            Some(p) if p.is_empty() => Err("hooks.command: the program name is empty".to_string()),
            Some(_) => Ok(HookCommand(v)),
        }
    }
}

/// The CSR subject. The service accepts only these five attributes: it rejects a CN (it writes
/// the instance ID there itself) and anything else.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct Subject {
    /// In the order they go into the CSR: C, ST, L, O, OU.
    entries: Vec<(SubjectAttr, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SubjectAttr {
    C,
    ST,
    L,
    O,
    OU,
}

impl SubjectAttr {
    pub const ALL: [SubjectAttr; 5] = [
        SubjectAttr::C,
        SubjectAttr::ST,
        SubjectAttr::L,
        SubjectAttr::O,
        SubjectAttr::OU,
    ];

    pub fn short_name(self) -> &'static str {
        match self {
            SubjectAttr::C => "C",
            SubjectAttr::ST => "ST",
            SubjectAttr::L => "L",
            SubjectAttr::O => "O",
            SubjectAttr::OU => "OU",
        }
    }
}

impl Subject {
    pub fn entries(&self) -> &[(SubjectAttr, String)] {
        &self.entries
    }
}

impl Default for Subject {
    /// `C=US`, as in the documented `openssl req -subj '/C=US'`.
    fn default() -> Self {
        Subject {
            entries: vec![(SubjectAttr::C, "US".to_string())],
        }
    }
}

impl TryFrom<BTreeMap<String, String>> for Subject {
    type Error = String;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (key, value) in &map {
            let attr = SubjectAttr::ALL
                .into_iter()
                .find(|a| a.short_name() == key.to_ascii_uppercase())
                .ok_or_else(|| {
                    if key.eq_ignore_ascii_case("CN") {
                        "certificate.subject.CN is not allowed: the metadata service rejects a CSR \
                         with a common name (it puts the instance ID there itself); use only \
                         C, ST, L, O, OU"
                            .to_string()
                    } else {
                        format!(
                            "certificate.subject.{key} is not allowed: the metadata service rejects \
                             any subject attribute other than C, ST, L, O, OU"
                        )
                    }
                })?;
            if value.trim().is_empty() || value.len() > 64 {
                return Err(format!(
                    "certificate.subject.{key} must be 1 to 64 characters, got {value:?}"
                ));
            }
            if attr == SubjectAttr::C
                && !(value.len() == 2 && value.chars().all(|c| c.is_ascii_uppercase()))
            {
                return Err(format!(
                    "certificate.subject.C = {value:?} must be a two-letter country code such as \"US\""
                ));
            }
            if entries.iter().any(|(a, _)| *a == attr) {
                return Err(format!("certificate.subject.{key} is given twice"));
            }
            entries.push((attr, value.clone()));
        }
        if entries.is_empty() {
            return Err(
                "certificate.subject is empty: give at least one of C, ST, L, O, OU, e.g. { C = \"US\" }"
                    .to_string(),
            );
        }
        entries.sort_by_key(|(a, _)| *a);
        Ok(Subject { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/eit-certd/config.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.metadata.endpoint, Endpoint::Url(DEFAULT_ENDPOINT.into()));
        assert_eq!(c.metadata.version.to_string(), "2025-08-26");
        assert_eq!(c.metadata.api, ApiFamily::Identity);
        assert_eq!(c.metadata.timeout.0, Duration::from_secs(10));
        assert_eq!(c.metadata.token_lifetime.0, Duration::from_secs(300));
        assert_eq!(c.certificate.lifetime.0, Duration::from_secs(3600));
        assert_eq!(c.certificate.key_bits.0, 4096);
        assert_eq!(c.certificate.renew_at.0, 0.66);
        assert_eq!(c.certificate.min_remaining.0, Duration::from_secs(600));
        assert_eq!(c.output.dir.0, PathBuf::from("/var/lib/eit-certd"));
        assert_eq!(c.output.keep.0, 3);
        assert!(c.hooks.is_empty());
    }

    #[test]
    fn full_design_example_parses() {
        let c = parse(
            r#"
[metadata]
endpoint = "https://api.metadata.cloud.ibm.com/"
version = "2025-04-22"
api = "instance_identity"
ca_file = "/etc/eit-certd/metadata-ca.pem"
timeout = "10s"
token_lifetime = "5m"

[certificate]
lifetime = "1h"
key_bits = 4096
subject = { C = "US", O = "Example", OU = "Storage" }
renew_at = 0.66
min_remaining = "10m"
jitter = "30s"
trust_anchor = "/etc/eit-certd/root.pem"

[output]
dir = "/var/lib/eit-certd"
group = "stunnel4"
keep = 3

[[hooks]]
name = "reload-stunnel"
command = ["/usr/lib/eit-certd/hooks/stunnel-reload"]
timeout = "30s"
"#,
        )
        .unwrap();
        assert_eq!(
            c.metadata.endpoint,
            Endpoint::Url("https://api.metadata.cloud.ibm.com".into())
        );
        assert_eq!(c.metadata.api, ApiFamily::InstanceIdentity);
        let subject: Vec<_> = c
            .certificate
            .subject
            .entries()
            .iter()
            .map(|(a, v)| (a.short_name(), v.as_str()))
            .collect();
        assert_eq!(subject, [("C", "US"), ("O", "Example"), ("OU", "Storage")]);
        assert_eq!(c.hooks[0].timeout.0, Duration::from_secs(30));
        assert!(!c.hooks[0].retry);
        assert_eq!(c.output.group.as_deref(), Some("stunnel4"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = err("[certificate]\nlifetime = \"1h\"\nlifetmie = \"2h\"\n");
        assert!(e.contains(":3:"), "{e}");
        assert!(e.contains("lifetmie"), "{e}");
    }

    #[test]
    fn cn_in_subject_is_refused_with_reason() {
        let e = err("[certificate]\nsubject = { C = \"US\", CN = \"host\" }\n");
        assert!(e.contains("certificate.subject.CN"), "{e}");
        assert!(e.contains("common name"), "{e}");
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn other_subject_attributes_are_refused() {
        let e = err("[certificate]\nsubject = { emailAddress = \"a@b\" }\n");
        assert!(e.contains("subject.emailAddress"), "{e}");
    }

    #[test]
    fn country_must_be_two_letters() {
        let e = err("[certificate]\nsubject = { C = \"USA\" }\n");
        assert!(e.contains("two-letter"), "{e}");
    }

    #[test]
    fn small_keys_are_refused() {
        let e = err("[certificate]\nkey_bits = 1024\n");
        assert!(e.contains("certificate.key_bits = 1024"), "{e}");
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn bad_duration_names_key_and_line() {
        let e = err("\n[certificate]\nlifetime = \"abc\"\n");
        assert!(e.contains("certificate.lifetime"), "{e}");
        assert!(e.contains(":3:"), "{e}");
    }

    #[test]
    fn token_lifetime_bounds_follow_the_service() {
        assert!(err("[metadata]\ntoken_lifetime = \"2h\"\n").contains("5s and 1h"));
        assert!(parse("[metadata]\ntoken_lifetime = \"5s\"\n").is_ok());
    }

    #[test]
    fn version_must_be_a_late_enough_date() {
        assert!(err("[metadata]\nversion = \"2021-12-31\"\n").contains("2022-03-01"));
        assert!(err("[metadata]\nversion = \"yesterday\"\n").contains("YYYY-MM-DD"));
        assert!(parse("[metadata]\nversion = \"2022-03-01\"\n").is_ok());
    }

    #[test]
    fn old_family_needs_an_old_version() {
        let e = err("[metadata]\napi = \"instance_identity\"\n");
        assert!(
            e.contains("metadata.api") && e.contains("2025-08-26"),
            "{e}"
        );
        let ok = parse("[metadata]\napi = \"instance_identity\"\nversion = \"2025-04-22\"\n");
        assert_eq!(ok.unwrap().metadata.api, ApiFamily::InstanceIdentity);
        assert!(parse("[metadata]\napi = \"identity\"\nversion = \"2024-11-12\"\n").is_ok());
    }

    #[test]
    fn endpoint_must_be_http_url_or_auto() {
        assert!(err("[metadata]\nendpoint = \"ftp://x\"\n").contains("metadata.endpoint"));
        assert_eq!(
            parse("[metadata]\nendpoint = \"auto\"\n")
                .unwrap()
                .metadata
                .endpoint,
            Endpoint::Auto
        );
    }

    #[test]
    fn min_remaining_must_leave_room() {
        let e = err("[certificate]\nlifetime = \"10m\"\nmin_remaining = \"10m\"\n");
        assert!(e.contains("certificate.min_remaining"), "{e}");
    }

    #[test]
    fn hooks_need_a_program_and_unique_names() {
        assert!(err("[[hooks]]\nname = \"a\"\ncommand = []\n").contains("hooks.command is empty"));
        let e = err("[[hooks]]\nname = \"a\"\ncommand = [\"x\"]\n[[hooks]]\nname = \"a\"\ncommand = [\"y\"]\n");
        assert!(e.contains("used twice"), "{e}");
    }

    #[test]
    fn unreadable_file_names_path_and_fix() {
        let e = Config::load(Path::new("/nonexistent/eit.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/eit.toml") && e.contains("eit-certd init"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped example must parse and must say exactly the defaults it claims to.
    #[test]
    fn shipped_example_is_the_defaults() {
        let text = include_str!("../../examples/config.toml");
        let parsed = Config::parse(text, Path::new("examples/config.toml")).unwrap();
        let defaults = Config::parse("", Path::new("empty")).unwrap();
        assert_eq!(parsed, defaults);
    }

    /// Every TOML snippet in the docs is valid configuration.
    #[test]
    fn documented_snippets_parse() {
        for (name, doc) in [
            ("README.md", include_str!("../../README.md")),
            ("hooks/README.md", include_str!("../../hooks/README.md")),
        ] {
            let blocks: Vec<&str> = doc
                .split("```toml\n")
                .skip(1)
                .map(|rest| rest.split("```").next().unwrap_or(""))
                .collect();
            assert!(!blocks.is_empty(), "{name} has no toml block");
            for block in blocks {
                Config::parse(block, Path::new(name))
                    .unwrap_or_else(|e| panic!("{name}: {e}\n{block}"));
            }
        }
    }
}

/// The commented configuration `eit-certd init` writes (also `examples/config.toml`).
pub const EXAMPLE: &str = include_str!("../../examples/config.toml");
