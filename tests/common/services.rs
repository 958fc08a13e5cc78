//! Service configs for the real origin and cache servers in tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use skein::ad::ServerKind;
use skein::config::{DirectorConfig, ServiceConfig};
use skein::director::{Director, DirectorHandle, Options};
use skein::fixtures;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One director, `director-a`, on port 0 with its store under `root`, trusting
/// `servers`; `extra` is appended to its config (sections like `[health]`).
pub async fn director(
    root: &Path,
    servers: &[(&str, ServerKind, &[&str])],
    extra: &str,
) -> anyhow::Result<DirectorHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = DirectorConfig::from_toml(&format!(
        r#"
name = "director-a"
listen = "{addr}"
advertise_url = "http://{addr}"
data_dir = "{data}"
[identity]
key = "unused.key"
[federation]
trust = "unused.toml"
{extra}"#,
        data = root.join("data").display()
    ))?;
    let mut trusted = vec![("director-a", ServerKind::Director, &[][..])];
    trusted.extend_from_slice(servers);
    let options = Options {
        trust: Some(fixtures::trust(&trusted)),
        key: Some(fixtures::key_for("director-a")),
        ..Default::default()
    };
    Ok(Director::start_with(config, options, listener, CancellationToken::new()).await?)
}

pub fn write_key(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.key"));
    let seed = URL_SAFE_NO_PAD.encode(fixtures::key_for(name).to_bytes());
    std::fs::write(&path, format!("{seed}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// A service config for `name` (kind from its prefix) with a key file written in `dir`.
pub fn service(
    dir: &Path,
    name: &str,
    url: &str,
    federation: &str,
    extra: &str,
) -> anyhow::Result<ServiceConfig> {
    let kind = name.split('-').next().unwrap_or_default();
    let key = write_key(dir, name)?;
    Ok(ServiceConfig::from_toml(&format!(
        "name = \"{name}\"\nkind = \"{kind}\"\ndata_url = \"{url}\"\nkey = \"{}\"\nfederation = \"{federation}\"\n{extra}",
        key.display()
    ))?)
}
