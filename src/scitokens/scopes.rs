//! WLCG / SciTokens storage scopes: which scope strings allow which action on which path.
//!
//! A token's `scope` claim is a space-separated list. The storage scopes are
//! `storage.read:<path>`, `storage.create:<path>` and `storage.modify:<path>` (WLCG
//! profile) and the older SciTokens `read:<path>` and `write:<path>`. A scope's path is
//! relative to the issuer's base path, which for Skein is the namespace prefix (as in
//! Pelican's origin, whose scitokens.cfg sets `base_path` to the export's prefix): a
//! `storage.read:/a` token for namespace `/test` reads `/test/a` and everything below it.
//! A scope without a path means the whole namespace.

use crate::paths::is_under_prefix;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET`, `HEAD`, `PROPFIND`.
    Read,
    /// `PUT` of an object that does not exist yet.
    Create,
    /// `PUT` over an existing object, or `DELETE`.
    Modify,
}

impl Action {
    /// The WLCG scope a token needs for this action (for error messages).
    pub fn wlcg_scope(self) -> &'static str {
        match self {
            Action::Read => "storage.read",
            Action::Create => "storage.create",
            Action::Modify => "storage.modify",
        }
    }

    /// The action as a word for messages (`reading`, `creating`, `changing`).
    pub fn verb(self) -> &'static str {
        match self {
            Action::Read => "reading",
            Action::Create => "creating",
            Action::Modify => "changing",
        }
    }

    /// Whether a scope named `name` grants this action.
    fn granted_by(self, name: &str) -> bool {
        match self {
            Action::Read => matches!(name, "storage.read" | "read"),
            // WLCG: `storage.modify` implies the right to create; SciTokens `write` is both.
            Action::Create => matches!(name, "storage.create" | "storage.modify" | "write"),
            Action::Modify => matches!(name, "storage.modify" | "write"),
        }
    }
}

/// True if `scopes` (a `scope` claim) allows `action` on `rel`, the object path relative
/// to the namespace (`/` for the namespace itself, else `/a/b`, clean).
pub fn allows(scopes: &str, action: Action, rel: &str) -> bool {
    scopes.split_whitespace().any(|scope| {
        let (name, path) = scope.split_once(':').unwrap_or((scope, "/"));
        action.granted_by(name) && path.starts_with('/') && covers(path, rel)
    })
}

/// True if the scope path `scope` covers `rel`: equal, or `rel` is below it.
fn covers(scope: &str, rel: &str) -> bool {
    // A scope path may not climb out of the base path.
    if scope.split('/').any(|segment| segment == "..") {
        return false;
    }
    is_under_prefix(rel, scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_scopes_cover_their_subtree_only() {
        assert!(allows("storage.read:/", Action::Read, "/a/b"));
        assert!(allows("storage.read:/a", Action::Read, "/a"));
        assert!(allows("storage.read:/a", Action::Read, "/a/b"));
        assert!(!allows("storage.read:/a", Action::Read, "/ab"));
        assert!(!allows("storage.read:/a", Action::Read, "/"));
        assert!(!allows("storage.read:/a/../b", Action::Read, "/a/../b/c"));
        assert!(allows(
            "openid storage.read:/x read:/a",
            Action::Read,
            "/a/c"
        ));
        assert!(allows("storage.read", Action::Read, "/anything"));
        assert!(
            !allows("storage.read:a", Action::Read, "/a"),
            "relative scope path"
        );
    }

    #[test]
    fn writes_need_create_or_modify() {
        assert!(!allows("storage.read:/", Action::Create, "/a"));
        assert!(!allows("storage.read:/", Action::Modify, "/a"));
        assert!(allows("storage.create:/", Action::Create, "/a"));
        assert!(!allows("storage.create:/", Action::Modify, "/a"));
        assert!(allows("storage.modify:/a", Action::Create, "/a/b"));
        assert!(allows("storage.modify:/a", Action::Modify, "/a/b"));
        assert!(allows("write:/", Action::Modify, "/a"));
        assert!(!allows("storage.modify:/a", Action::Read, "/a"));
        assert!(!allows("", Action::Read, "/a"));
        assert!(!allows("storage.readx:/", Action::Read, "/a"));
    }
}
