use jsonwebtoken::Algorithm;

use super::*;

const BASE: &str = r#"
[server]
listen = "127.0.0.1:50051"

[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"

[[auth.issuers]]
iss = "https://idp.example.test"
audience = "casegate"
algorithms = ["EdDSA", "ES256"]
jwks_file = "jwks.json"

[storage]
data_dir = "data"

[audit]
origin = "casegate.example/audit"
signing_key = "audit.key"

[privacy]
pseudonym_key = "pseudonym.key"

[notes]
keyring = "notes.keyring"
"#;

fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    // Files under /etc/casegate "exist" unless their name says otherwise.
    Config::parse_with(
        text,
        Path::new("/etc/casegate/casegate.toml"),
        Path::new("/etc/casegate"),
        env,
        |path| {
            if path.to_string_lossy().contains("missing") {
                Err("No such file or directory (os error 2)".to_owned())
            } else {
                Ok(())
            }
        },
    )
}

fn problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    match parse(text, env) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_defaults_and_resolves_paths() {
    let config = parse(BASE, &[]).expect("valid");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:50051");
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(config.tls.cert, Path::new("/etc/casegate/pki/server.pem"));
    assert_eq!(config.storage.data_dir, Path::new("/etc/casegate/data"));
    assert_eq!(config.limits.max_body_bytes, 256 * 1024);
    assert_eq!(
        config.auth.issuers[0].algorithms,
        [Algorithm::EdDSA, Algorithm::ES256]
    );
    assert_eq!(config.vocabulary, Vocabulary::default());
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.notes.forget_after, Duration::from_secs(30 * 86_400));
}

#[test]
fn purged_notes_may_be_forgotten_at_once_but_not_after_ten_years() {
    let config = parse(&(BASE.to_owned() + "forget_after = \"0s\"\n"), &[]).expect("valid");
    assert_eq!(config.notes.forget_after, Duration::ZERO);
    let found = problems(&(BASE.to_owned() + "forget_after = \"3651days\"\n"), &[]);
    assert!(
        found.iter().any(|p| p.starts_with("notes.forget_after")),
        "{found:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = BASE
        .replace("127.0.0.1:50051", "not-an-address")
        .replace(r#"["EdDSA", "ES256"]"#, r#"["HS256", "none", "RS256"]"#)
        + "\n[limits]\nmax_body_bytes = \"big\"\ncolour = 3\n\n[log]\nformat = \"xml\"\n";
    let found = problems(&text, &[]);
    let expected = [
        "server.listen: \"not-an-address\" is not an address like 127.0.0.1:50051",
        "auth.issuers[0].algorithms: \"HS256\" is not allowed (use EdDSA, ES256 or RS256)",
        "auth.issuers[0].algorithms: \"none\" is not allowed (use EdDSA, ES256 or RS256)",
        "limits.max_body_bytes: expected a positive integer, found string",
        "limits.colour: unknown key",
        "log.format: \"xml\" is not one of \"text\", \"json\"",
    ];
    assert_eq!(found, expected);
}

#[test]
fn missing_sections_are_named() {
    let found = problems("[server]\nlisten = \"127.0.0.1:1\"\n", &[]);
    assert_eq!(
        found,
        [
            "tls.cert: missing (expected a string)",
            "tls.key: missing (expected a string)",
            "tls.client_ca: missing (expected a string)",
            "auth.issuers: at least one [[auth.issuers]] is required",
            "storage.data_dir: missing (expected a string)",
            "audit.origin: missing (expected a string)",
            "audit.signing_key: missing (expected a string)",
            "privacy.pseudonym_key: missing (expected a string)",
            "notes.keyring: missing (expected a string)",
        ]
    );
}

#[test]
fn environment_overrides_settings_and_typos_are_caught() {
    let config = parse(
        BASE,
        &[
            ("CASEGATE_SERVER__LISTEN", "127.0.0.1:6000"),
            ("CASEGATE_LIMITS__MAX_BODY_BYTES", "1024"),
            ("CASEGATE_SERVER__SHUTDOWN_GRACE", "2s"),
            ("UNRELATED", "x"),
        ],
    )
    .expect("valid");
    assert_eq!(config.server.listen.port(), 6000);
    assert_eq!(config.limits.max_body_bytes, 1024);
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(2));

    let found = problems(BASE, &[("CASEGATE_SERVER__LISTN", "127.0.0.1:1")]);
    assert_eq!(found, ["server.listn: unknown key"]);
}

#[test]
fn vocabulary_can_be_configured() {
    let text = BASE.to_owned()
        + r#"
[vocabulary]
max_consent_period = "180days"
[[vocabulary.categories]]
name = "job_progress"
senders = ["employment_specialist"]
[[vocabulary.categories]]
name = "treatment_summary"
senders = ["clinician", "surgeon"]
approval_required = true
[[vocabulary.purposes]]
name = "ips_follow_up"
"#;
    assert_eq!(
        problems(&text, &[]),
        [
            "vocabulary.categories[1].senders: \"surgeon\": unknown role (expected one of: clinician, nav_counsellor, employment_specialist, privacy_officer, jobseeker, admin)"
        ]
    );
    let config = parse(&text.replace(", \"surgeon\"", ""), &[]).expect("valid");
    assert_eq!(config.vocabulary.categories().count(), 2);
    assert_eq!(config.max_consent_period, Duration::from_secs(180 * 86400));
}

#[test]
fn syntax_errors_are_reported_as_such() {
    assert!(matches!(
        parse("[server", &[]),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn unreadable_files_are_reported_with_the_other_problems() {
    let text = BASE.replace("pki/server.pem", "pki/missing.pem") + "\n[server2]\nx = 1\n";
    assert_eq!(
        problems(&text, &[]),
        [
            "server2: unknown key",
            "tls.cert: /etc/casegate/pki/missing.pem: No such file or directory (os error 2)",
        ]
    );
}

#[test]
fn the_example_production_config_is_valid() {
    let text = include_str!("../../../../deploy/casegate.example.toml");
    let config = Config::parse_with(
        text,
        Path::new("/etc/casegate/casegate.toml"),
        Path::new("/etc/casegate"),
        [],
        |_| Ok(()),
    )
    .expect("the shipped example parses");
    assert_eq!(config.auth.issuers.len(), 3);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.vocabulary, Vocabulary::default());
    let web = config.web.expect("the example serves the web pages");
    assert!(web.jobseekers.oidc.is_some() && web.officers.oidc.is_some());
}

#[test]
fn the_web_section_is_checked_as_a_whole() {
    let web = r#"
[web]
listen = "0.0.0.0:8080"
gateway_ca = "ca.pem"
issuer = "no-such-issuer"
issuer_key = "web.key"

[web.jobseekers]
cert = "portal.pem"
key = "portal.key"

[web.jobseekers.oidc]
issuer_url = "http://idp.example"
client_id = "c"

[web.officers]
cert = "privacy.pem"
key = "privacy.key"

[web.officers.oidc]
issuer_url = "https://idp.example"
client_id = "c"
"#;
    let problems = match parse(&format!("{BASE}{web}"), &[]) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "web.listen",
        "web.issuer",
        "web.public_url",
        "web.jobseekers.oidc.issuer_url",
        "web.officers.oidc.role_claim",
    ] {
        assert!(keys.contains(&key), "{key} not among {keys:?}");
    }
}

#[test]
fn connection_age_and_stale_crls_have_defaults_bounds_and_a_closed_set_of_values() {
    let config = parse(BASE, &[]).expect("valid");
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.server.max_connection_age, Duration::from_secs(3600));
    assert_eq!(
        config.server.max_connection_age_grace,
        Duration::from_secs(30)
    );
    assert_eq!(config.tls.stale_crls, StaleCrls::Warn);
    assert_eq!(config.server.keepalive_interval, Duration::from_secs(30));
    assert_eq!(config.server.keepalive_timeout, Duration::from_secs(10));
    let config = parse(
        BASE,
        &[
            ("CASEGATE_SERVER__MAX_CONNECTION_AGE", "10m"),
            ("CASEGATE_TLS__STALE_CRLS", "refuse"),
        ],
    )
    .expect("valid");
    assert_eq!(config.server.max_connection_age, Duration::from_secs(600));
    assert_eq!(config.tls.stale_crls, StaleCrls::Refuse);
    assert_eq!(
        problems(
            BASE,
            &[
                ("CASEGATE_SERVER__MAX_CONNECTION_AGE", "0s"),
                ("CASEGATE_TLS__STALE_CRLS", "ignore"),
            ]
        ),
        [
            "server.max_connection_age: \"0s\" is out of range 1s..=7days",
            "tls.stale_crls: \"ignore\" is not one of \"warn\", \"refuse\"",
        ]
    );
}

/// The example's text under each table header (`[a.b]` or `[[a.b]]`, or one shown commented
/// out as `# [a.b]`), comments included, all blocks of a header together.
fn example_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = vec![(String::new(), String::new())];
    for line in text.lines() {
        let trimmed = line.trim();
        let trimmed = trimmed
            .strip_prefix("# [")
            .map_or(trimmed, |_| &trimmed[2..]);
        if trimmed.starts_with('[') {
            let name = trimmed.trim_matches(|c| c == '[' || c == ']').to_owned();
            blocks.push((name, String::new()));
        } else if let Some((_, block)) = blocks.last_mut() {
            block.push_str(trimmed);
            block.push('\n');
        }
    }
    blocks
}

/// Whether header `name` is one of the section paths `pattern` stands for (`*`: any one
/// name).
fn matches_section(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<&str>, Vec<&str>) =
        (pattern.split('.').collect(), name.split('.').collect());
    pattern.len() == name.len() && pattern.iter().zip(&name).all(|(p, n)| *p == "*" || p == n)
}

#[test]
fn every_declared_key_is_written_or_shown_in_the_example_under_its_section() {
    let text = include_str!("../../../../deploy/casegate.example.toml");
    let blocks = example_blocks(text);
    let mut missing = Vec::new();
    for schema in super::schemas() {
        let sections: Vec<&str> = blocks
            .iter()
            .filter(|(name, _)| matches_section(schema.section, name))
            .map(|(_, block)| block.as_str())
            .collect();
        // `[organisations]` holds organisation numbers; its tables are written inline there.
        let sections = if schema.section == "organisations.*" {
            blocks
                .iter()
                .filter(|(name, _)| name == "organisations")
                .map(|(_, block)| block.as_str())
                .collect()
        } else {
            sections
        };
        for key in schema.keys {
            // Nested tables are headers of their own.
            if key.kind == crate::base::settings::Kind::Table {
                continue;
            }
            let shown = sections.iter().any(|block| {
                block.lines().any(|line| {
                    let line = line.trim_start_matches('#').trim_start();
                    line.starts_with(&format!("{} =", key.name))
                        || line.contains(&format!("{{ {} =", key.name))
                        || line.contains(&format!(", {} =", key.name))
                })
            });
            if !shown {
                missing.push(format!("[{}] {}", schema.section, key.name));
            }
        }
    }
    assert!(missing.is_empty(), "not in the example: {missing:?}");
}

#[test]
fn the_example_sets_no_key_outside_the_schemas() {
    // Config::parse reports unknown keys; the example parses without a problem.
    let text = include_str!("../../../../deploy/casegate.example.toml");
    let mut with_typo = text.replace("retention = \"7days\"", "retension = \"7days\"");
    assert_ne!(with_typo, text);
    with_typo.push('\n');
    let found = Config::parse_with(
        &with_typo,
        Path::new("/etc/casegate/casegate.toml"),
        Path::new("/etc/casegate"),
        [],
        |_| Ok(()),
    )
    .expect_err("a misspelt key is refused");
    assert!(
        found.to_string().contains("notes.retension: unknown key"),
        "{found}"
    );
}

/// BASE with `storage` written as `storage`.
fn with_storage(storage: &str) -> String {
    BASE.replace(
        "[storage]\ndata_dir = \"data\"\n",
        &format!("[storage]\ndata_dir = \"data\"\n{storage}\n"),
    )
}

#[test]
fn the_storage_backend_is_embedded_unless_postgres_is_named_with_its_section() {
    let config = parse(BASE, &[]).expect("valid");
    assert!(matches!(config.storage.backend, super::Backend::Embedded));

    let text = with_storage(
        "backend = \"postgres\"\n[storage.postgres]\n\
         url = \"postgresql://casegate@db.example:5432/casegate\"\n\
         ca = \"db-ca.pem\"\npool_size = 4\nconnect_timeout = \"2s\"\n",
    );
    let config = parse(&text, &[]).expect("valid");
    let super::Backend::Postgres(pg) = config.storage.backend else {
        panic!("postgres expected");
    };
    assert_eq!(pg.url, "postgresql://casegate@db.example:5432/casegate");
    assert_eq!(pg.ca.as_deref(), Some(Path::new("/etc/casegate/db-ca.pem")));
    assert_eq!(
        (pg.pool_size, pg.connect_timeout),
        (4, Duration::from_secs(2))
    );
    assert_eq!(pg.client_cert, None);

    // Loopback needs no CA.
    let local = with_storage(
        "backend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://casegate@127.0.0.1:5432/casegate\"\n",
    );
    assert!(parse(&local, &[]).is_ok());
}

#[test]
fn a_postgres_section_that_would_leak_a_password_or_skip_tls_is_refused() {
    let cases: &[(&str, &str)] = &[
        (
            "backend = \"sqlite\"",
            "storage.backend: must be \"embedded\" or \"postgres\", not \"sqlite\"",
        ),
        (
            "backend = \"postgres\"",
            "storage.postgres.url: missing (expected a string)",
        ),
        (
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://casegate:s3cret@127.0.0.1/casegate\"",
            "storage.postgres.url: must not hold a password: put it in a file named by password_file",
        ),
        (
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://casegate@db.example/casegate\"",
            "storage.postgres.ca: required for host db.example: only loopback hosts and Unix \
             sockets may be reached without TLS",
        ),
        (
            // Named loopback, connecting elsewhere: `hostaddr` is where it goes.
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://casegate@localhost/casegate?hostaddr=10.0.0.5\"",
            "storage.postgres.ca: required for hostaddr 10.0.0.5: only loopback hosts and Unix \
             sockets may be reached without TLS",
        ),
        (
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://casegate@127.0.0.1/casegate\"\nisolation = \"snapshot\"",
            "storage.postgres.isolation: must be \"read_committed\" or \"serializable\", not \"snapshot\"",
        ),
        (
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://casegate@127.0.0.1/casegate\"\nclient_cert = \"c.pem\"",
            "storage.postgres.client_key: client_cert and client_key go together",
        ),
        (
            "backend = \"postgres\"\n[storage.postgres]\nurl = \"postgresql://casegate@127.0.0.1/casegate\"\npool_size = 0",
            "storage.postgres.pool_size: 0 is out of range 1..=1024",
        ),
        (
            "[storage.postgres]\nurl = \"postgresql://casegate@127.0.0.1/casegate\"",
            "storage.postgres: is read only with backend = \"postgres\"",
        ),
    ];
    for (storage, expected) in cases {
        let found = problems(&with_storage(storage), &[]);
        assert_eq!(found, [*expected], "{storage}");
    }
}

/// The configuration each Kubernetes manifest mounts (the `casegate.toml` of its ConfigMap).
fn manifest_config(manifest: &str) -> String {
    let start = manifest.find("casegate.toml: |\n").expect("a ConfigMap") + 17;
    manifest[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_manifests_configs_are_valid() {
    for (manifest, postgres) in [
        (
            include_str!("../../../../deploy/kubernetes/casegate.yaml"),
            false,
        ),
        (
            include_str!("../../../../deploy/kubernetes/casegate-replicas.yaml"),
            true,
        ),
    ] {
        let text = manifest_config(manifest);
        let config = Config::parse_with(
            &text,
            Path::new("/etc/casegate/casegate.toml"),
            Path::new("/etc/casegate"),
            [],
            |_| Ok(()),
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        match (&config.storage.backend, postgres) {
            (Backend::Postgres(pg), true) => {
                assert!(pg.ca.is_some(), "TLS to the database");
                assert!(pg.listen);
            }
            (Backend::Embedded, false) => {}
            (other, _) => panic!("unexpected backend {other:?}"),
        }
    }
}
