//! Service configs for the real origin and cache servers in tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use skein::config::ServiceConfig;
use skein::fixtures;

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
