//! `skein directors`, `skein ads` and `skein healthcheck`.

use std::time::Duration;

use skein::client::Client;
use skein::discovery::discover_directors;

use super::CaBundle;

fn client(ca: &CaBundle) -> anyhow::Result<Client> {
    Ok(Client::new(Duration::from_secs(5), ca.path.as_deref())?)
}

/// Prints the directors `from` knows.
pub async fn directors(from: &str, json: bool, ca: &CaBundle) -> anyhow::Result<()> {
    let client = client(ca)?;
    if json {
        let list = client.directors(from).await?;
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let found = discover_directors(&client, Some(from), &[]).await;
    for url in found {
        println!("{url}");
    }
    Ok(())
}

/// Prints the live ads a director holds.
pub async fn ads(from: &str, json: bool, ca: &CaBundle) -> anyhow::Result<()> {
    let listing = client(ca)?.ads(from).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(());
    }
    let now = skein::clock::Clock::now_ms(&skein::clock::SystemClock);
    println!(
        "{:<9} {:<8} {:<20} {:<32} {:<8} {:>8}  NAMESPACES",
        "KIND", "FROM", "NAME", "DATA URL", "STATUS", "TTL(s)"
    );
    for entry in listing {
        let ad = &entry.signed.ad;
        let namespaces: Vec<&str> = ad.namespaces.iter().map(|n| n.path.as_str()).collect();
        let status = match ad.status {
            skein::ad::AdStatus::Ok => "ok",
            skein::ad::AdStatus::ShuttingDown => "leaving",
        };
        println!(
            "{:<9} {:<8} {:<20} {:<32} {:<8} {:>8}  {}",
            ad.kind.as_str(),
            entry.provenance.as_str(),
            ad.name,
            ad.data_url,
            status,
            entry.effective_expiry.saturating_sub(now) / 1000,
            namespaces.join(" ")
        );
    }
    Ok(())
}

/// Exits 0 if the director is ready.
pub async fn healthcheck(url: &str, ca: &CaBundle) -> anyhow::Result<()> {
    let client = Client::new(Duration::from_secs(3), ca.path.as_deref())?;
    if client.ready(url).await? {
        Ok(())
    } else {
        anyhow::bail!("director at {url} is not ready")
    }
}
