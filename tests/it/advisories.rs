//! The dependency tree against the RustSec advisory database: every crate version in
//! `Cargo.lock` is checked against the snapshot of the database in `vendor/advisory-db`
//! (vulnerabilities, and the unmaintained, unsound and notice advisories), through the
//! `rustsec` crate that `cargo audit` is built on. An advisory that applies fails the test
//! unless `.ci/advisories.toml` names it with the reason it is accepted; an accepted one that
//! no longer applies fails it too, so the list stays true. `scripts/update-advisory-db.sh`
//! refreshes the snapshot.

use rustsec::advisory::Informational;
use rustsec::report::{Report, Settings};
use rustsec::{Database, Lockfile};
use std::collections::BTreeMap;
use std::path::Path;

/// `.ci/advisories.toml`: the accepted advisories, id → reason.
fn accepted(root: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root.join(".ci/advisories.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut out = BTreeMap::new();
    for a in doc["accept"].as_array().expect("[[accept]] entries") {
        let id = a["id"].as_str().expect("id").to_string();
        let why = a["why"].as_str().expect("why").trim().to_string();
        assert!(why.len() > 40, "{id}: say why it is accepted");
        out.insert(id, why);
    }
    out
}

#[test]
fn no_unaccepted_advisory_applies_to_the_dependency_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let db = Database::open(&root.join("vendor/advisory-db")).unwrap();
    assert!(db.iter().count() > 10, "the advisory snapshot is empty");
    let lock = Lockfile::load(root.join("Cargo.lock")).unwrap();
    let settings = Settings {
        informational_warnings: vec![
            Informational::Unmaintained,
            Informational::Unsound,
            Informational::Notice,
        ],
        ..Settings::default()
    };
    let report = Report::generate(&db, &lock, &settings);
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    for v in &report.vulnerabilities.list {
        let what = format!(
            "{} {}: {}",
            v.package.name, v.package.version, v.advisory.title
        );
        found.insert(v.advisory.id.to_string(), what);
    }
    for w in report.warnings.values().flatten() {
        if let Some(a) = &w.advisory {
            let what = format!(
                "{} {} ({:?}): {}",
                w.package.name, w.package.version, w.kind, a.title
            );
            found.insert(a.id.to_string(), what);
        }
    }
    let ok = accepted(root);
    let new: Vec<String> = found
        .iter()
        .filter(|(id, _)| !ok.contains_key(*id))
        .map(|(id, what)| format!("{id} {what}"))
        .collect();
    assert!(
        new.is_empty(),
        "advisories apply to Cargo.lock: update the crates, or accept each in \
         .ci/advisories.toml with the reason:\n{}",
        new.join("\n")
    );
    let stale: Vec<&String> = ok.keys().filter(|id| !found.contains_key(*id)).collect();
    assert!(
        stale.is_empty(),
        "accepted advisories that no longer apply: {stale:?}"
    );
}
