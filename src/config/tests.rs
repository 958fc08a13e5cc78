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

#[test]
fn sizes_parse() {
    assert_eq!(ByteSize::try_from(Value::from("1MiB")).unwrap().0, 1 << 20);
    assert_eq!(ByteSize::try_from(Value::from(512u64)).unwrap().0, 512);
    assert!(ByteSize::try_from(Value::from("3 parsecs")).is_err());
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
