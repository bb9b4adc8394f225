//! The metadata commands, useful before anything is configured: `token`, `iam-token`,
//! `instance`.

use std::io::Write;
use std::path::Path;

use super::{config_or_defaults, failed, usage, CommandError, CommandResult};
use crate::cli::{IamTokenArgs, InstanceArgs, TokenArgs};
use crate::metadata::client::Client;

async fn metadata_client(config_path: &Path) -> Result<Client, CommandError> {
    let config = config_or_defaults(config_path)?;
    Client::connect(&config.metadata).map_err(failed)
}

pub(super) async fn token(config_path: &Path, args: &TokenArgs) -> CommandResult {
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
