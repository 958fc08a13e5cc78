//! The client's bearer token, found as Pelican's client (and the WLCG bearer token
//! discovery profile) finds it: `--token FILE`, else `$BEARER_TOKEN`, else the file
//! `$BEARER_TOKEN_FILE`, else `$XDG_RUNTIME_DIR/bt_u<uid>`, else `/tmp/bt_u<uid>`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

/// `--token FILE`, for the commands that read objects.
#[derive(Debug, Args)]
pub struct TokenArg {
    /// A file holding a bearer token for the object (else BEARER_TOKEN, BEARER_TOKEN_FILE,
    /// $XDG_RUNTIME_DIR/bt_u<uid>, /tmp/bt_u<uid>).
    #[arg(id = "token", long = "token", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

impl TokenArg {
    /// The token, if any is configured; an explicit `--token` that cannot be read is an
    /// error, the discovered places are best effort.
    pub fn find(&self) -> anyhow::Result<Option<String>> {
        if let Some(file) = &self.file {
            return read(file)
                .with_context(|| format!("cannot read the token file {}", file.display()))
                .map(Some);
        }
        if let Some(token) = std::env::var("BEARER_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(token));
        }
        if let Some(file) = std::env::var_os("BEARER_TOKEN_FILE") {
            let file = PathBuf::from(file);
            return read(&file)
                .with_context(|| format!("cannot read BEARER_TOKEN_FILE {}", file.display()))
                .map(Some);
        }
        let name = match std::fs::metadata("/proc/self") {
            Ok(meta) => format!("bt_u{}", meta.uid()),
            Err(_) => return Ok(None),
        };
        let places = std::env::var_os("XDG_RUNTIME_DIR")
            .map(|dir| PathBuf::from(dir).join(&name))
            .into_iter()
            .chain([Path::new("/tmp").join(&name)]);
        Ok(places.filter_map(|file| read(&file).ok()).next())
    }
}

fn read(file: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(file)?.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "the file is empty");
    Ok(token)
}
