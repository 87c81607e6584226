//! The settings' layering, checks, messages and generated file.

use super::*;

#[test]
fn shipped_config_file_is_the_generated_one() {
    let shipped = include_str!("../../config/concierge.toml");
    assert_eq!(
        shipped,
        Settings::default_toml(),
        "config/concierge.toml is stale: regenerate it with `concierge config`"
    );
}

#[test]
fn readme_documents_every_setting() {
    let readme = include_str!("../../README.md");
    for line in Settings::default_toml().lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        let env = format!("CONCIERGE_{}", key.to_uppercase());
        let flag = format!("--{}", key.replace('_', "-"));
        let value = match value.trim_matches('"') {
            "" => "empty".to_owned(),
            v => format!("`{v}`"),
        };
        let row = format!("| `{key}` | `{env}` | `{flag}` | {value} |");
        assert!(
            readme.contains(&row),
            "README.md lacks the row starting {row}"
        );
    }
}

#[test]
fn shipped_config_parses_to_the_defaults() {
    let layer: SettingsLayer = toml::from_str(&Settings::default_toml()).expect("parses");
    let mut settings = Settings::default();
    settings.apply(layer);
    assert_eq!(settings, Settings::default());
}

#[test]
fn layers_override_in_order() {
    let dir = std::env::temp_dir().join(format!("concierge-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("c.toml");
    std::fs::write(&path, "bind = \"0.0.0.0:9000\"\nmax_tags = 3\n").expect("write");
    let overrides = SettingsLayer {
        max_tags: Some(5),
        ..Default::default()
    };
    let settings = Settings::load(Some(&path), SettingsLayer::default(), overrides).expect("loads");
    assert_eq!(settings.bind, "0.0.0.0:9000");
    assert_eq!(settings.max_tags, 5);
    assert_eq!(settings.max_frame_size, 65_536);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_files_and_values_are_reported() {
    let dir = std::env::temp_dir().join(format!("concierge-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("c.toml");
    std::fs::write(&path, "bnid = \"x\"\n").expect("write");
    let err = Settings::load(
        Some(&path),
        SettingsLayer::default(),
        SettingsLayer::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let err = Settings::load(
        None,
        SettingsLayer::default(),
        SettingsLayer {
            bind: Some("nowhere".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("HOST:PORT"), "{err}");
    assert!(Settings::load(
        Some(&dir.join("missing.toml")),
        SettingsLayer::default(),
        SettingsLayer::default()
    )
    .is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// A `var` reading from `vars` instead of the environment.
fn vars(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
    let vars: Vec<(String, OsString)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[test]
fn variables_are_read_and_reported_under_their_own_names() {
    let layer = SettingsLayer::from_vars(vars(&[
        ("CONCIERGE_MAX_TAGS", "7"),
        ("CONCIERGE_SECRET", ""),
    ]))
    .expect("reads");
    assert_eq!(layer.max_tags, Some(7));
    assert_eq!(layer.secret.as_deref(), Some(""));
    assert_eq!(layer.bind, None);

    let err = SettingsLayer::from_vars(vars(&[("CONCIERGE_WORKERS", "lots")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CONCIERGE_WORKERS=lots: must be a whole number, 0 or more"
    );
    let err = SettingsLayer::from_vars(vars(&[("CONCIERGE_NODE_LEASE_MS", "-5")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CONCIERGE_NODE_LEASE_MS=-5: must be a whole number, 0 or more"
    );
    let err =
        SettingsLayer::from_vars(vars(&[("CONCIERGE_MAX_FILE_SIZE", "99999999999999999999")]))
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "CONCIERGE_MAX_FILE_SIZE=99999999999999999999: must be at most 18446744073709551615"
    );
}

#[test]
fn a_wrong_value_is_named_as_its_source_gave_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "node_lease_ms = 0\n").expect("write");
    let err = Settings::load(
        Some(&path),
        SettingsLayer::default(),
        SettingsLayer::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid config file {}: node_lease_ms = 0: must be greater than 0",
            path.display()
        )
    );
    // Overridden, the file's value is not checked.
    let env = SettingsLayer::from_vars(vars(&[("CONCIERGE_NODE_LEASE_MS", "0")])).expect("reads");
    let flags = SettingsLayer {
        node_lease_ms: Some(1),
        ..Default::default()
    };
    Settings::load(Some(&path), env.clone(), flags).expect("the flag wins");
    let err = Settings::load(Some(&path), env, SettingsLayer::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CONCIERGE_NODE_LEASE_MS=0: must be greater than 0"
    );
    let flags = SettingsLayer {
        bind: Some("nowhere".into()),
        ..Default::default()
    };
    let err = Settings::load(None, SettingsLayer::default(), flags).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid value \"nowhere\" for --bind: not HOST:PORT"),
        "{err}"
    );
    let err = Settings {
        data_dir: PathBuf::new(),
        ..Settings::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting data_dir = \"\": must name a folder"
    );

    // Two settings that contradict each other: both are named.
    let flags = SettingsLayer {
        heartbeat_timeout_ms: Some(5_000),
        ..Default::default()
    };
    let err = Settings::load(None, SettingsLayer::default(), flags).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid settings: heartbeat_timeout_ms = 5000 (set by --heartbeat-timeout-ms) \
         must be greater than heartbeat_interval_ms = 5000 (the default)"
    );
}

#[test]
fn a_tls_certificate_needs_its_key() {
    let flags = SettingsLayer {
        tls_cert: Some(PathBuf::from("cert.pem")),
        ..Default::default()
    };
    let err = Settings::load(None, SettingsLayer::default(), flags).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid settings: tls_cert = \"cert.pem\" (set by --tls-cert) needs tls_key \
         as well: set both for TLS, or neither"
    );
    let env = SettingsLayer::from_vars(vars(&[("CONCIERGE_TLS_KEY", "key.pem")])).expect("reads");
    let err = Settings::load(None, env, SettingsLayer::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid settings: tls_key = \"key.pem\" (set by CONCIERGE_TLS_KEY) needs \
         tls_cert as well: set both for TLS, or neither"
    );
    let both = Settings {
        tls_cert: "cert.pem".into(),
        tls_key: "key.pem".into(),
        ..Settings::default()
    };
    both.validate().expect("both set");
    assert_eq!(
        both.tls_files(),
        Some((Path::new("cert.pem"), Path::new("key.pem")))
    );
    assert_eq!(Settings::default().tls_files(), None);
}

#[test]
fn the_config_file_can_be_named_by_its_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "max_tags = 3\nworkers = 2\n").expect("write");
    let file = path.display().to_string();
    let settings = Settings::from_command_line(
        None,
        SettingsLayer {
            workers: Some(4),
            ..Default::default()
        },
        vars(&[("CONCIERGE_CONFIG", &file), ("CONCIERGE_WORKERS", "3")]),
    )
    .expect("loads");
    assert_eq!((settings.max_tags, settings.workers), (3, 4));
    // --config beats the variable.
    let err = Settings::from_command_line(
        Some(dir.path().join("missing.toml")),
        SettingsLayer::default(),
        vars(&[("CONCIERGE_CONFIG", &file)]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");
    let err = Settings::from_command_line(
        None,
        SettingsLayer::default(),
        vars(&[("CONCIERGE_CONFIG", "")]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "CONCIERGE_CONFIG=: must name a TOML file, or be unset"
    );
}

#[test]
fn a_redis_password_is_never_shown_in_an_error() {
    let e = Origin::Flag
        .invalid("redis_url", &"redis://:hunter2@h/zero".to_owned(), "bad")
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}
