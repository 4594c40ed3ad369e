//! The build script of the library (package `gadms-lib`, lib/Cargo.toml).
//!
//! Embeds the default pretraining dataset `fixtures/synth-pedes` (`reid_raw.json` and
//! `imgs/**`) into the library: writes `$OUT_DIR/synth_pedes.rs`, a sorted list of
//! `(path relative to the fixture, include_bytes!(…))`. A missing fixture gives an empty list
//! (`gadms pretrain` then says how to regenerate it).
//!
//! Also records which source built the binary (`gadms --version`, `config.json` of a run):
//! `GADMS_GIT_COMMIT` = the git commit, with `-dirty` when tracked files differ from it, or
//! `unknown` outside a git checkout.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, root, out);
        } else if p.is_file() {
            let rel = p.strip_prefix(root).expect("below the root");
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((rel.join("/"), p));
        }
    }
}

/// `git -C dir ARGS` output, trimmed, when git runs and succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // GIT_OPTIONAL_LOCKS=0: `git status` must not refresh (rewrite) the index, or the next
    // cargo command would see `.git` change and rebuild the crate.
    let out = std::process::Command::new("git")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn git_commit(dir: &Path) {
    let commit = match git(dir, &["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{c}-dirty") } else { c }
        }
        _ => "unknown".to_string(),
    };
    println!("cargo:rustc-env=GADMS_GIT_COMMIT={commit}");
    // A new commit or an edited source re-runs this script (not `.git/index`: staging does not
    // change what differs from HEAD).
    // (Only paths that exist: cargo re-runs a script on every build for a missing one.)
    for p in [
        ".git/HEAD",
        ".git/refs",
        "src",
        "nn/src",
        "data/src",
        "ckpt/src",
    ] {
        let p = dir.join(p);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}

fn main() {
    // The repository: the library's manifest is lib/Cargo.toml (this script is its build script).
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let repo = manifest.parent().expect("lib/ has a parent").to_path_buf();
    git_commit(&repo);
    let root = repo.join("fixtures").join("synth-pedes");
    println!("cargo:rerun-if-changed={}", repo.join("build.rs").display());
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    let json = root.join("reid_raw.json");
    if json.is_file() {
        files.push(("reid_raw.json".to_string(), json));
    }
    walk(&root.join("imgs"), &root, &mut files);
    files.sort();
    let mut src = String::from(
        "/// The embedded `fixtures/synth-pedes`: (path relative to it, bytes), sorted by path.\n\
         pub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (rel, path) in &files {
        src.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("synth_pedes.rs");
    std::fs::write(out, src).expect("write synth_pedes.rs");
}
