//! Config loading and validation tests.

use super::*;

const MINIMAL: &str = r#"
name = "director-a"
advertise_url = "http://127.0.0.1:8444/"
[identity]
key = "keys/a.key"
[federation]
trust = "trust.toml"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = DirectorConfig::from_toml(MINIMAL).unwrap();
    assert_eq!(c.advertise_url, "http://127.0.0.1:8444");
    assert_eq!(c.ads.max_lifetime, Duration::from_secs(900));
    assert_eq!(c.peers.forward_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.max_body, 1 << 20);
    assert!(c.tls.is_none());
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let bad = r#"
name = "d"
listen = "not-an-address"
advertise_url = "ftp://x"
colour = "blue"
[ads]
max_lifetime = "forever"
[peers]
poll_interval = "0s"
typo = 1
"#;
    let err = DirectorConfig::from_toml(bad).unwrap_err();
    let all = err.problems.join("\n");
    for key in [
        "listen:",
        "advertise_url:",
        "colour: unknown key",
        "ads.max_lifetime:",
        "peers.poll_interval: must be greater than zero",
        "peers.typo: unknown key",
        "identity.key: missing",
        "federation.trust: missing",
    ] {
        assert!(all.contains(key), "missing {key:?} in:\n{all}");
    }
}

#[test]
fn service_config_parses_namespaces() {
    let text = r#"
name = "origin-1"
kind = "origin"
data_url = "http://origin-1:9001"
key = "k"
federation = "http://director-a:8444"
[[namespace]]
path = "/test"
public_reads = true
"#;
    let c = ServiceConfig::from_toml(text).unwrap();
    assert_eq!(c.namespaces[0].path, "/test");
    assert!(c.namespaces[0].reads);
    assert_eq!(c.web_url, "http://origin-1:9001");
    let err = ServiceConfig::from_toml("name = \"x\"\nkind = \"director\"").unwrap_err();
    let all = err.problems.join("\n");
    assert!(
        all.contains("kind:") && all.contains("data_url: missing") && all.contains("federation:")
    );
}

/// `[location]` is a coordinate, checked like the director's `routing.server_location`.
#[test]
fn a_service_declares_its_location() {
    let base = "name = \"c\"\nkind = \"cache\"\ndata_url = \"http://c:9001\"\nkey = \"k\"\n\
                federation = \"http://d:8444\"\n";
    assert_eq!(ServiceConfig::from_toml(base).unwrap().location, None);
    let c =
        ServiceConfig::from_toml(&format!("{base}[location]\nlat = 52.37\nlon = 4.9\n")).unwrap();
    assert_eq!(c.location, crate::coord::Coord::new(52.37, 4.9));
    for (bad, expect) in [
        (
            "[location]\nlat = 95.0\nlon = 4.9\n",
            "location: lat 95 / lon 4.9 is not a coordinate",
        ),
        (
            "[location]\nlat = 52.37\n",
            "location: set both lat and lon",
        ),
        (
            "[location]\nlat = 1.0\nlon = 2.0\nalt = 3.0\n",
            "location.alt: unknown key",
        ),
    ] {
        let err = ServiceConfig::from_toml(&format!("{base}{bad}")).unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains(expect), "{all}");
    }
}

#[test]
fn sizes_parse() {
    assert_eq!(ByteSize::try_from(Value::from("1MiB")).unwrap().0, 1 << 20);
    assert_eq!(ByteSize::try_from(Value::from(512u64)).unwrap().0, 512);
    assert!(ByteSize::try_from(Value::from("3 parsecs")).is_err());
}

#[test]
// figment::Jail fixes the closure's error type (figment::Error, which is large).
#[allow(clippy::result_large_err)]
fn a_syntax_error_is_reported_once() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("d.toml", "name = \"d\"\n[ads\nmax_lifetime = 1\n")?;
        let err = DirectorConfig::load(Some(Path::new("d.toml"))).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
        assert!(err.problems[0].contains("d.toml"), "{:?}", err.problems);
        jail.create_file("s.toml", "name = \"s\"\nkind = = \"origin\"\n")?;
        let err = ServiceConfig::load(Some(Path::new("s.toml"))).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
        Ok(())
    });
}

#[test]
// figment::Jail fixes the closure's error type (figment::Error, which is large).
#[allow(clippy::result_large_err)]
fn an_unknown_key_from_the_environment_says_so() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("d.toml", MINIMAL)?;
        jail.set_env("SKEIN_PEERS__POLL_INTERVL", "10s");
        jail.set_env("SKEIN_PEERS__POLL_INTERVAL", "10s");
        let err = DirectorConfig::load(Some(Path::new("d.toml"))).unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "peers.poll_intervl: unknown key (from the environment variable SKEIN_PEERS__POLL_INTERVL; unset it or fix its name)"
                    .to_string()
            ]
        );
        jail.clear_env();
        jail.create_file("d.toml", &format!("colour = 1\n{MINIMAL}"))?;
        let err = DirectorConfig::load(Some(Path::new("d.toml"))).unwrap_err();
        assert_eq!(err.problems, vec!["colour: unknown key".to_string()]);
        Ok(())
    });
}

#[test]
fn health_and_presence_defaults_and_problems() {
    let c = DirectorConfig::from_toml(MINIMAL).unwrap();
    assert!(c.health.enabled);
    assert_eq!(c.health.interval, Duration::from_secs(15));
    assert_eq!(c.health.path, "/api/v1.0/health");
    assert_eq!(c.health.failures, 1);
    assert!(c.presence.enabled && !c.presence.single_origin && c.presence.caches);
    assert_eq!(c.presence.absent_ttl, Duration::from_secs(15));
    let bad = format!(
        "{MINIMAL}[health]\nconcurrency = 0\npath = \"health\"\nfailures = 0\nenabled = \"yes\"\n\
         [presence]\nfan_out = 0\npresent_ttl = \"0s\"\nprobe = 1\n"
    );
    let all = DirectorConfig::from_toml(&bad)
        .unwrap_err()
        .problems
        .join("\n");
    for key in [
        "health.concurrency: must be at least 1",
        "health.path: \"health\" must start with /",
        "health.failures: must be at least 1",
        "health.enabled:",
        "presence.fan_out: must be at least 1",
        "presence.present_ttl: must be greater than zero",
        "presence.probe: unknown key",
    ] {
        assert!(all.contains(key), "missing {key:?} in:\n{all}");
    }
}

#[test]
fn routing_keys_parse_and_default() {
    let c = DirectorConfig::from_toml(MINIMAL).unwrap();
    assert_eq!(c.routing.sort, None);
    assert!(c.routing.geoip_db.is_none());
    assert!(!c.routing.geoip_optional);
    assert!(c.routing.trusted_proxies.is_empty());
    let text = format!(
        "{MINIMAL}\n[routing]\nsort = \"adaptive\"\ngeoip_db = \"/var/lib/GeoLite2-City.mmdb\"\n\
         geoip_optional = true\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\"]\n\
         [[routing.geoip_override]]\nnetwork = \"192.168.0.0/16\"\nlat = 43.07\nlon = -89.4\n\
         [[routing.server_location]]\nname = \"cache-1\"\nlat = 51.5\nlon = -0.1\n"
    );
    let c = DirectorConfig::from_toml(&text).unwrap();
    assert_eq!(
        c.routing.sort,
        Some(crate::routing::sort::SortMethod::Adaptive)
    );
    assert!(c.routing.geoip_optional);
    assert_eq!(c.routing.trusted_proxies.len(), 3);
    assert_eq!(c.routing.trusted_proxies[0].to_string(), "127.0.0.1/32");
    assert_eq!(c.routing.geoip_overrides.len(), 1);
    assert_eq!(c.routing.server_locations[0].0, "cache-1");
}

#[test]
fn bad_routing_keys_are_each_reported() {
    let text = format!(
        "{MINIMAL}\n[routing]\nsort = \"nearest\"\ntrusted_proxies = [\"not-a-net\"]\n\
         [[routing.geoip_override]]\nnetwork = \"1.2.3.0/33\"\nlat = 95.0\nlon = 0.0\n\
         [[routing.server_location]]\nname = \"\"\nlat = 0.0\nlon = 0.0\n"
    );
    let all = DirectorConfig::from_toml(&text)
        .unwrap_err()
        .problems
        .join("\n");
    for needle in [
        "routing.sort:",
        "routing.trusted_proxies:",
        "routing.geoip_override[0].network:",
        "routing.geoip_override[0]: lat 95",
        "routing.server_location[0].name:",
    ] {
        assert!(all.contains(needle), "{needle} missing from:\n{all}");
    }
}

#[test]
fn log_settings_are_read_and_checked() {
    let c = DirectorConfig::from_toml(MINIMAL).unwrap();
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(!c.log.access);
    assert_eq!(c.federation.trust_poll_interval, Duration::from_secs(2));
    let json = format!(
        "{MINIMAL}\n[log]\nformat = \"json\"\naccess = true\nlevel = \"warn,skein=debug\"\n"
    );
    let c = DirectorConfig::from_toml(&json).unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.log.access);
    let bad = format!("{MINIMAL}\n[log]\nformat = \"xml\"\nlevel = \"info,[\"\n");
    let all = DirectorConfig::from_toml(&bad)
        .unwrap_err()
        .problems
        .join("\n");
    assert!(
        all.contains("log.format:") && all.contains("log.level:"),
        "{all}"
    );
}
