//! Host names Skein never looks up: the reserved `.example` and `.invalid` names (RFC 2606,
//! RFC 6761) exist only in documentation and tests, so asking DNS about them can only
//! fail, slowly, and sends queries off the machine for nothing. Every Skein HTTP client
//! answers them at once with an error instead.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// True for a host under a reserved top-level name that never resolves.
pub fn is_reserved(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    ["example", "invalid"]
        .iter()
        .any(|tld| host == *tld || host.ends_with(&format!(".{tld}")))
}

/// The system resolver, except for reserved names.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolver;

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            if is_reserved(&host) {
                return Err(
                    format!("{host} is a reserved name (RFC 6761) and never resolves").into(),
                );
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reserved_names_are_refused() {
        for reserved in ["origin-1.example", "EXAMPLE", "x.example.", "a.b.invalid"] {
            assert!(is_reserved(reserved), "{reserved}");
        }
        for real in [
            "localhost",
            "example.org",
            "director-a",
            "127.0.0.1",
            "notexample",
        ] {
            assert!(!is_reserved(real), "{real}");
        }
    }

    #[tokio::test]
    async fn a_reserved_name_fails_at_once_and_others_resolve() {
        let name: Name = "origin-1.example".parse().unwrap();
        let error = Resolver.resolve(name).await.err().unwrap();
        assert!(error.to_string().contains("reserved"), "{error}");
        let name: Name = "localhost".parse().unwrap();
        assert!(Resolver.resolve(name).await.unwrap().next().is_some());
    }
}
