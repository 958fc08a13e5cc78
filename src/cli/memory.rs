//! What the client remembers between runs: the directors each federation URL led to,
//! in `$XDG_CACHE_HOME/skein/directors.json` (or `~/.cache/...`). Best effort: a missing
//! or unreadable file just means no memory.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("skein").join("directors.json"))
}

/// Federation URL -> directors found through it.
pub fn load() -> BTreeMap<String, Vec<String>> {
    path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Saves the map (atomically; errors ignored).
pub fn save(map: &BTreeMap<String, Vec<String>>) {
    let Some(path) = path() else { return };
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(bytes) = serde_json::to_vec_pretty(map) else {
        return;
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}
