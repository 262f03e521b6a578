//! Manifest parsing and validation, and the options a manifest fixes.

use super::*;

const GOOD: &str = r#"
name = "shell"
version = "0.1.0"
abi = "0.1.0"
description = "runs sh"

[grants]
exec = ["sh"]
project_http_ports = [4096]
credentials = ["ANTHROPIC_API_KEY"]

[limits]
memory_mib = 64
max_timeout_secs = 600
"#;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(Path::new("/plugins/shell.toml"), text)
}

#[test]
fn a_complete_manifest_parses() {
    let m = parse(GOOD).expect("valid");
    assert_eq!(m.name.as_str(), "shell");
    assert_eq!(m.abi, AbiVersion::new(0, 1, 0));
    assert_eq!(m.limits.memory_bytes, 64 * 1024 * 1024);
    assert_eq!(m.limits.max_timeout, Duration::from_secs(600));
    assert_eq!(m.grants.exec().collect::<Vec<_>>(), ["sh"]);
}

#[test]
fn errors_name_the_file_and_the_field() {
    let bad = GOOD.replace("memory_mib = 64", "memory_mib = 0");
    let err = parse(&bad).expect_err("zero memory accepted").to_string();
    assert!(err.contains("/plugins/shell.toml"), "{err}");
    assert!(err.contains("limits.memory_mib"), "{err}");

    let err = parse("name = ").expect_err("bad toml accepted").to_string();
    assert!(
        err.contains("/plugins/shell.toml: malformed manifest"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let bad = GOOD.replace("[grants]", "[grants]\nnetwork = true");
    assert!(matches!(parse(&bad), Err(ManifestError::Syntax { .. })));
}

#[test]
fn abi_and_version_must_be_versions() {
    let bad = GOOD.replace("abi = \"0.1.0\"", "abi = \"latest\"");
    assert!(matches!(
        parse(&bad),
        Err(ManifestError::Invalid { field: "abi", .. })
    ));
    let pre = GOOD.replace("version = \"0.1.0\"", "version = \"2.0.0-beta.1\"");
    assert_eq!(parse(&pre).expect("pre-release").version, "2.0.0-beta.1");
    let bad = GOOD.replace("version = \"0.1.0\"", "version = \"new\"");
    assert!(matches!(
        parse(&bad),
        Err(ManifestError::Invalid {
            field: "version",
            ..
        })
    ));
}

#[test]
fn timeout_ceiling_is_bounded() {
    let bad = GOOD.replace("max_timeout_secs = 600", "max_timeout_secs = 999999999");
    assert!(matches!(
        parse(&bad),
        Err(ManifestError::Invalid {
            field: "limits.max_timeout_secs",
            ..
        })
    ));
}

#[test]
fn grants_deny_by_default_and_match_exactly() {
    let grants = Grants::new(["sh".to_owned()], [4096], ["KEY".to_owned()]);
    assert!(grants.check_exec("sh").is_ok());
    assert!(grants.check_exec("/bin/sh").is_err());
    assert!(grants.check_exec("bash").is_err());
    assert!(grants.check_port(4096).is_ok());
    assert!(grants.check_port(22).is_err());
    assert!(grants.check_credential("KEY").is_ok());
    assert!(grants.check_credential("OTHER").is_err());

    let none = Grants::default();
    assert!(none.check_exec("sh").is_err());
    assert!(none.check_port(80).is_err());
    assert!(none.check_credential("KEY").is_err());
}

#[test]
fn a_manifest_may_name_a_shared_component_and_fix_options() {
    let plain = parse(GOOD).expect("valid");
    assert_eq!(plain.component, "shell.wasm");
    assert!(plain.options.is_empty());
    let agent = GOOD.replace(
        "[grants]",
        "component = \"acp.wasm\"\n\n[options]\ncommand = \"gemini\"\nargs = [\"--acp\"]\n\n[grants]",
    );
    let m = parse(&agent).expect("valid");
    assert_eq!(
        m.component_path(Path::new("/plugins/shell.toml")),
        Path::new("/plugins/acp.wasm")
    );
    assert_eq!(
        Manifest::component_path_of(Path::new("/plugins/shell.toml"), &agent),
        Path::new("/plugins/acp.wasm")
    );
    assert_eq!(m.options["args"], serde_json::json!(["--acp"]));
    for bad in [
        "../acp.wasm",
        "sub/acp.wasm",
        ".wasm",
        "acp.so",
        "/abs.wasm",
    ] {
        let text = GOOD.replace("[grants]", &format!("component = {bad:?}\n[grants]"));
        assert!(
            matches!(
                parse(&text),
                Err(ManifestError::Invalid {
                    field: "component",
                    ..
                })
            ),
            "{bad} accepted"
        );
        assert_eq!(
            Manifest::component_path_of(Path::new("/plugins/shell.toml"), &text),
            Path::new("/plugins/shell.wasm")
        );
    }
}

#[test]
fn fixed_options_are_added_and_cannot_be_changed() {
    let agent = GOOD.replace("[grants]", "[options]\ncommand = \"gemini\"\n\n[grants]");
    let m = parse(&agent).expect("valid");
    let mut requested = serde_json::Map::new();
    requested.insert("cancel_grace_ms".into(), serde_json::json!(100));
    let merged = m.apply_options(&requested).expect("no conflict");
    assert_eq!(merged["command"], "gemini");
    assert_eq!(merged["cancel_grace_ms"], 100);
    requested.insert("command".into(), serde_json::json!("gemini"));
    assert!(
        m.apply_options(&requested).is_ok(),
        "repeating a fixed value"
    );
    requested.insert("command".into(), serde_json::json!("sh"));
    let err = m
        .apply_options(&requested)
        .expect_err("changed a fixed option");
    assert_eq!(err.keys, "`command`");
    assert!(
        err.to_string().ends_with("cannot be changed: `command`"),
        "{err}"
    );
}

#[test]
fn name_must_match_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.toml");
    std::fs::write(&path, GOOD).expect("write");
    let err = Manifest::load(&path).expect_err("mismatch accepted");
    assert!(matches!(err, ManifestError::Invalid { field: "name", .. }));
    let path = dir.path().join("shell.toml");
    std::fs::write(&path, GOOD).expect("write");
    assert!(Manifest::load(&path).is_ok());
}
