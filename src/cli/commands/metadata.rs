//! The metadata commands, useful before anything is configured: `token`, `iam-token`,
//! `instance`.

use std::io::Write;
use std::path::Path;

use super::{config_or_defaults, failed, usage, CommandError, CommandResult};
use crate::cli::{IamTokenArgs, InstanceArgs, TokenArgs};
use crate::config::TokenLifetime;
use crate::metadata::client::Client;

async fn metadata_client(config_path: &Path) -> Result<Client, CommandError> {
    let config = config_or_defaults(config_path)?;
    Client::connect(&config.metadata).map_err(failed)
}

pub(super) async fn token(config_path: &Path, args: &TokenArgs) -> CommandResult {
    // Whole seconds, as the request sends them (`expires_in`).
    let range = TokenLifetime::MIN.as_secs()..=TokenLifetime::MAX.as_secs();
    if !range.contains(&args.lifetime.as_secs()) {
        return Err(usage(anyhow::anyhow!(
            "--lifetime must be between {} and {} (the service's range)",
            humantime::format_duration(TokenLifetime::MIN),
            humantime::format_duration(TokenLifetime::MAX)
        )));
    }
    let client = metadata_client(config_path).await?;
    let token = client.new_token(args.lifetime).await.map_err(failed)?;
    out!("{}", token.expose());
    Ok(0)
}

pub(super) async fn iam_token(config_path: &Path, args: &IamTokenArgs) -> CommandResult {
    let client = metadata_client(config_path).await?;
    let profile = crate::metadata::api::TrustedProfileRef {
        id: args.profile_id.clone(),
        crn: args.profile_crn.clone(),
    };
    let token = client.iam_token(profile).await.map_err(failed)?;
    out!("{}", token.expose());
    Ok(0)
}

pub(super) async fn instance(config_path: &Path, args: &InstanceArgs) -> CommandResult {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `token --lifetime` against a service that refuses connections: a lifetime in range
    /// gets as far as the request (exit 1), one out of range is refused before it (exit 2).
    fn token_with(lifetime: Duration) -> CommandResult {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            "[metadata]\nendpoint = \"http://127.0.0.1:1\"\ntimeout = \"1s\"\n",
        )
        .expect("write the config");
        let args = TokenArgs { lifetime };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(token(&config, &args))
    }

    #[test]
    fn token_lifetime_is_checked_against_the_config_range() {
        for secs in [4, 3601, 86400] {
            match token_with(Duration::from_secs(secs)) {
                Err(e) => {
                    assert_eq!(e.code, 2, "{secs}s: {:#}", e.error);
                    assert_eq!(
                        e.error.to_string(),
                        "--lifetime must be between 5s and 1h (the service's range)"
                    );
                }
                Ok(code) => panic!("{secs}s accepted (exit {code})"),
            }
        }
        for secs in [5, 3600] {
            match token_with(Duration::from_secs(secs)) {
                Err(e) => assert_eq!(e.code, 1, "{secs}s: {:#}", e.error),
                Ok(code) => panic!("{secs}s: a token from a closed port (exit {code})"),
            }
        }
    }

    /// `--help` names the range the command enforces, the one of `metadata.token_lifetime`.
    #[test]
    fn token_help_names_the_config_range() {
        use clap::CommandFactory;
        let cli = crate::cli::Cli::command();
        let token = cli.find_subcommand("token").expect("the token subcommand");
        let arg = token
            .get_arguments()
            .find(|a| a.get_id() == "lifetime")
            .expect("--lifetime");
        let help = arg
            .get_help()
            .expect("--lifetime has a help text")
            .to_string();
        let range = format!(
            "{} to {}",
            humantime::format_duration(TokenLifetime::MIN),
            humantime::format_duration(TokenLifetime::MAX)
        );
        assert!(help.contains(&range), "{help:?} does not say {range:?}");
    }
}
