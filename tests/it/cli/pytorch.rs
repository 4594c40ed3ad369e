//! PyTorch zip checkpoints through the binary (`fixtures/pytorch/`, made by its `make.py` with
//! `torch.save`): `inspect` reads an IRRA-style `best.pth` as it reads the same tensors in
//! safetensors, and every refusal (code in the pickle, a truncated archive, a legacy file) is
//! one `error:` line with exit status 1.

use super::*;

fn pt(name: &str) -> PathBuf {
    fixture("pytorch").join(name)
}

/// `inspect`'s report without its `file:` line, the file's path written as FILE.
fn report(w: &Path) -> String {
    let (so, _) = ok(&args!["inspect", w]);
    so.replace(&w.display().to_string(), "FILE")
        .lines()
        .filter(|l| !l.starts_with("file:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn inspect_reads_an_irra_pth_as_its_safetensors() {
    let got = report(&pt("irra.pth"));
    assert_eq!(got, report(&pt("irra.safetensors")));
    assert!(got.contains("layout:     openai/open_clip"), "{got}");
    assert!(got.contains("BF16 x1, F16 x1, F32 x6, F64 x1"), "{got}");
}

#[test]
fn code_in_a_checkpoint_is_refused_and_not_run() {
    let d = TempDir::new("pt-evil");
    let out = d.join("out.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_gadms"))
        .current_dir(&d.0)
        .args(args![
            "embed",
            "--weights",
            pt("malicious.pth"),
            "--texts",
            captions(),
            "--out"
        ])
        .arg(&out)
        .output()
        .expect("start gadms");
    let se = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{se}");
    let want =
        "malicious.pth: the pickle calls posix.system; refusing to run code from a checkpoint";
    assert_eq!(se.trim_end().lines().count(), 1, "{se}");
    assert!(
        se.starts_with("error: ") && se.trim_end().ends_with(want),
        "{se}"
    );
    assert!(!d.join("gadms-pwned").exists(), "the pickle's command ran");
    assert!(!out.exists());
}

#[test]
fn truncated_and_legacy_checkpoints_are_refused() {
    let d = TempDir::new("pt-bad");
    let out = d.join("out.safetensors");
    let embed = |w: PathBuf| {
        args![
            "embed",
            "--weights",
            w,
            "--texts",
            captions(),
            "--out",
            &out
        ]
    };
    fails(
        &embed(pt("truncated.pth")),
        &out,
        &["truncated.pth: is not a readable zip archive"],
    );
    fails(
        &embed(pt("legacy.pt")),
        &out,
        &[
            "legacy.pt: is a legacy (pre-1.6, non-zip) torch.save file",
            "OUT.safetensors",
        ],
    );
    for name in ["truncated.pth", "legacy.pt", "malicious.pth"] {
        let o = gadms(&args!["inspect", pt(name)]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "inspect {name}: {}",
            text(&o.stderr)
        );
    }
}
