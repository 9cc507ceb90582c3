//! `verbatim keys`: create, list, revoke and rotate API keys in the keys
//! file. Works on the file directly (the server need not run; a running
//! server picks the change up within a second). A token is printed once,
//! alone on the last line of the output, and is never stored or shown again.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::auth::{KeyRecord, KeysFile, Role};
use crate::domain::TenantId;

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    /// The server's data folder; the keys file defaults to DATA_DIR/keys.toml.
    #[arg(long, env = "VERBATIM_DATA_DIR", default_value = "data", global = true)]
    data_dir: PathBuf,
    /// The keys file [default: DATA_DIR/keys.toml].
    #[arg(long, env = "VERBATIM_KEYS_FILE", global = true)]
    keys_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key for a tenant with roles; prints the token once, on the last line.
    Add {
        /// The tenant the key reads and writes (`default` is the data folder's own tenant).
        #[arg(long)]
        tenant: String,
        /// ingest (Ingest, IngestStream), read (Get, Search, Report, Stats, themes list and discovery), admin (everything, incl. deletes, erasure, theme edits). Repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<Role>,
        /// A note for `keys list` (who or what uses the key).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List the keys (never their tokens).
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: calls with it fail with UNAUTHENTICATED within a second.
    Revoke {
        /// The key id (the 12 hex digits `keys list` shows).
        key_id: String,
    },
    /// Replace a key by a new one with the same tenant, roles and label, and revoke the old one.
    Rotate {
        /// The key id (the 12 hex digits `keys list` shows).
        key_id: String,
    },
    /// Show or change a tenant's settings (PII redaction); a running server applies them to the next write.
    Tenant {
        /// The tenant (`default` too: `verbatim serve --redact` wins over this for it).
        tenant: String,
        /// PII to replace before storing: a list of email, phone, card, iban, or all / none.
        #[arg(long)]
        redact: Option<String>,
        /// Keep each original text next to the redacted one, for admins (true / false).
        #[arg(long)]
        keep_original: Option<bool>,
    },
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let path = args
        .keys_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("keys.toml"));
    match args.command {
        KeysCommand::Add {
            tenant,
            roles,
            label,
        } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let new = KeysFile::edit(&path, |file| file.add(&tenant, &roles, &label))?;
            print_created(&path, &new.record, &new.token, None);
        }
        KeysCommand::Rotate { key_id } => {
            let (new, old) = KeysFile::edit(&path, |file| {
                let old = file.find(&key_id).cloned().ok_or_else(|| {
                    crate::auth::AuthError::KeysFile(format!("no key with id {key_id}"))
                })?;
                if !old.active() {
                    return Err(crate::auth::AuthError::KeysFile(format!(
                        "key {key_id} is revoked; create a new one with `verbatim keys add`"
                    )));
                }
                let tenant =
                    TenantId::parse(&old.tenant).map_err(crate::auth::AuthError::KeysFile)?;
                let new = file.add(&tenant, &old.roles, &old.label)?;
                file.revoke(&key_id)?;
                Ok((new, old))
            })?;
            print_created(&path, &new.record, &new.token, Some(&old.id));
        }
        KeysCommand::Revoke { key_id } => {
            let record = KeysFile::edit(&path, |file| file.revoke(&key_id).cloned())?;
            println!(
                "revoked key {} (tenant {}) in {}; a running server refuses it within a second",
                record.id,
                record.tenant,
                path.display()
            );
        }
        KeysCommand::Tenant {
            tenant,
            redact,
            keep_original,
        } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("tenant: {e}"))?;
            let policy = redact
                .as_deref()
                .map(crate::redact::RedactionPolicy::parse_list)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--redact: {e}"))?;
            let settings = if policy.is_none() && keep_original.is_none() {
                KeysFile::load(&path)?
                    .tenants
                    .get(tenant.as_str())
                    .cloned()
                    .unwrap_or_default()
            } else {
                KeysFile::edit(&path, |file| {
                    let settings = file.tenants.entry(tenant.to_string()).or_default();
                    if let Some(policy) = &policy {
                        settings.redact = policy.kinds.clone();
                    }
                    if let Some(keep) = keep_original {
                        settings.keep_original = keep;
                    }
                    Ok(settings.clone())
                })?
            };
            println!(
                "tenant {tenant}: redact {}; keep_original {}",
                crate::redact::RedactionPolicy {
                    kinds: settings.redact,
                }
                .to_list(),
                settings.keep_original
            );
        }
        KeysCommand::List { json } => {
            let file = KeysFile::load(&path)?;
            if json {
                for key in &file.keys {
                    println!("{}", serde_json::to_string(&listed(key))?);
                }
            } else if file.keys.is_empty() {
                println!("no keys in {}", path.display());
            } else {
                println!(
                    "{:<12}  {:<16}  {:<18}  {:<20}  {:<8}  LABEL",
                    "ID", "TENANT", "ROLES", "CREATED", "STATUS"
                );
                for key in &file.keys {
                    let roles: Vec<&str> = key.roles.iter().map(|r| r.name()).collect();
                    println!(
                        "{:<12}  {:<16}  {:<18}  {:<20}  {:<8}  {}",
                        key.id,
                        key.tenant,
                        roles.join(","),
                        key.created_at,
                        if key.active() { "active" } else { "revoked" },
                        key.label
                    );
                }
            }
        }
    }
    Ok(())
}

fn listed(key: &KeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "tenant": key.tenant,
        "roles": key.roles,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "label": key.label,
        "active": key.active(),
    })
}

fn print_created(path: &std::path::Path, key: &KeyRecord, token: &str, replaced: Option<&str>) {
    let roles: Vec<&str> = key.roles.iter().map(|r| r.name()).collect();
    println!(
        "created key {} for tenant {} with roles {} in {}",
        key.id,
        key.tenant,
        roles.join(","),
        path.display()
    );
    if let Some(old) = replaced {
        println!("revoked the key it replaces: {old}");
    }
    println!("the token below is shown once; send it as `authorization: Bearer <token>` (CLI: --token or VERBATIM_TOKEN):");
    println!("{token}");
}
