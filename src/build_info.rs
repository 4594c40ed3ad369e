//! Which build this is: the crate version and the git commit it was built from (`-dirty` when
//! tracked files differed from it; `unknown` outside a git checkout), recorded by `build.rs`.
//! Printed by `gadms --version`, written into every run's `config.json` (`build`) and into the
//! metadata of its checkpoint model files (`gadms.version`, `gadms.commit`).

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit of the source (see the module docs).
pub const COMMIT: &str = env!("GADMS_GIT_COMMIT");

/// `gadms VERSION (commit COMMIT)`.
pub fn version_line() -> String {
    format!("gadms {VERSION} (commit {COMMIT})")
}

/// The `build` object of a run's `config.json`.
pub fn json() -> serde_json::Value {
    serde_json::json!({ "version": VERSION, "commit": COMMIT })
}

/// The metadata entries of a model file.
pub fn metadata() -> [(&'static str, String); 2] {
    [
        ("gadms.version", VERSION.to_string()),
        ("gadms.commit", COMMIT.to_string()),
    ]
}
