//! PyTorch zip checkpoints (`fixtures/pytorch/`, made by its `make.py` with `torch.save`) read
//! by `gadms_ckpt::torch` into the same tensors as the safetensors reference; the refusals
//! (code in the pickle, truncated archives, legacy files, integer tensors); and random byte
//! flips, which must give an error or a map, never a panic.

use crate::common::fixture;
use gadms_ckpt::tensors::read_file;
use gadms_ckpt::{CkptError, TensorMap, read_weights};
use std::path::PathBuf;

fn pt(name: &str) -> PathBuf {
    fixture("pytorch").join(name)
}

fn reference() -> TensorMap {
    read_file(&pt("irra.safetensors")).expect("reference safetensors")
}

fn err_text(name: &str) -> String {
    match read_file(&pt(name)) {
        Ok(m) => panic!("{name} was read ({} tensors)", m.tensors.len()),
        Err(e) => e.to_string(),
    }
}

/// Reference tensors under their keys with `prefix` replaced by `with`.
fn renamed(with: &str) -> Vec<(String, gadms_ckpt::Array)> {
    reference()
        .tensors
        .into_iter()
        .map(|(k, v)| (k.replacen("base_model.", with, 1), v))
        .collect()
}

#[test]
fn irra_pth_equals_safetensors() {
    let got = read_file(&pt("irra.pth")).expect("irra.pth");
    let want = reference();
    assert_eq!(got.tensors.len(), 9);
    assert_eq!(
        got.tensors, want.tensors,
        "tensors (strided, offset, shared storage)"
    );
    assert_eq!(got.dtypes, want.dtypes, "dtype counts");
    // the strided one really is a transpose, not the storage order
    let tp = &got.tensors["base_model.text_projection"];
    assert_eq!(tp.shape, vec![8, 4]);
    assert_eq!(
        got.tensors["base_model.logit_scale"].shape,
        Vec::<usize>::new()
    );
}

#[test]
fn open_clip_and_plain_state_dicts() {
    let oc = read_file(&pt("openclip.bin")).expect("openclip.bin");
    assert_eq!(
        oc.tensors.into_iter().collect::<Vec<_>>(),
        renamed("module.")
    );
    let plain = read_file(&pt("plain.pt")).expect("plain.pt");
    assert_eq!(plain.tensors.into_iter().collect::<Vec<_>>(), renamed(""));
}

#[test]
fn prefixes_are_stripped_on_load() {
    // read_weights converts to native names: the `base_model.` prefix goes, q/k/v split
    let w = read_weights(&pt("irra.pth")).expect("irra.pth as weights");
    let r = read_weights(&pt("irra.safetensors")).expect("reference as weights");
    assert!(w.native.tensors.contains_key("token_embedding.weight"));
    assert!(
        w.native
            .tensors
            .contains_key("transformer.resblocks.0.attn.q_proj.weight")
    );
    assert_eq!(w.native.tensors, r.native.tensors);
}

#[test]
fn code_in_the_pickle_is_refused() {
    let e = err_text("malicious.pth");
    // os.system is posix.system on the Linux that pickled it
    let want =
        "malicious.pth: the pickle calls posix.system; refusing to run code from a checkpoint";
    assert!(e.ends_with(want), "{e}");
    assert!(!std::path::Path::new("gadms-pwned").exists());
}

#[test]
fn damaged_and_legacy_files_are_refused() {
    let e = err_text("truncated.pth");
    assert!(
        e.contains("truncated.pth: is not a readable zip archive"),
        "{e}"
    );
    let e = err_text("legacy.pt");
    assert!(
        e.contains("legacy (pre-1.6, non-zip) torch.save file"),
        "{e}"
    );
    assert!(e.contains("torch.save(torch.load('IN'"), "{e}");
    assert!(e.contains("st.save_file("), "{e}");
    let e = err_text("script.pt");
    assert!(e.contains("script.pt: is a TorchScript archive"), "{e}");
    assert!(
        e.contains("torch.jit.load('IN', map_location='cpu').state_dict()"),
        "{e}"
    );
    match read_file(&pt("int.pth")) {
        Err(CkptError::Dtype { key, dtype, .. }) => {
            assert_eq!((key.as_str(), dtype.as_str()), ("ln_final.weight", "I64"));
        }
        other => panic!("int.pth: {other:?}"),
    }
}

/// A tensor whose size reads past its storage is an error naming the key: the pickle's size
/// tuple for `ln_final.bias` (8) is patched to 9 in place.
#[test]
fn reading_past_a_storage_is_refused() {
    let bytes = std::fs::read(pt("plain.pt")).unwrap();
    let dir = std::env::temp_dir().join(format!("gadms-pt-oob-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // zip entries are stored, so the pickle is in the file as is; find the key, then the
    // first BININT1 8 / TUPLE1 after it (the size tuple (8,))
    let at = find(&bytes, b"ln_final.bias").expect("key in pickle");
    let size = at + find(&bytes[at..], &[b'K', 8, 0x85]).expect("size tuple");
    let mut bad = bytes.clone();
    bad[size + 1] = 9;
    let p = dir.join("oob.pt");
    // the zip CRC of data.pkl no longer matches: fix it so the range check is what fails
    std::fs::write(&p, fix_crc(bad, b"plain/data.pkl")).unwrap();
    let e = read_file(&p).expect_err("oob").to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        e.contains("tensor 'ln_final.bias' reads past the end of its storage"),
        "{e}"
    );
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The central-header offset and the data range of the stored entry `name` (torch writes
/// sizes and CRCs in the central directory and a data descriptor, zeros in the local header).
fn entry(b: &[u8], name: &[u8]) -> (usize, std::ops::Range<usize>) {
    let central = b
        .windows(name.len())
        .rposition(|w| w == name)
        .expect("central")
        - 46;
    let size = u32_at(b, central + 20);
    let local = u32_at(b, central + 42);
    let extra = u16::from_le_bytes(b[local + 28..local + 30].try_into().unwrap()) as usize;
    let start = local + 30 + name.len() + extra;
    (central, start..start + size)
}

/// Recomputes the CRC-32 of the stored entry `name` in the central directory and the data
/// descriptor.
fn fix_crc(mut b: Vec<u8>, name: &[u8]) -> Vec<u8> {
    let (central, data) = entry(&b, name);
    let crc = crc32(&b[data.clone()]).to_le_bytes();
    b[central + 16..central + 20].copy_from_slice(&crc);
    let d = data.end
        + if b[data.end..].starts_with(b"PK\x07\x08") {
            4
        } else {
            0
        };
    b[d..d + 4].copy_from_slice(&crc);
    b
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in data {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Single-byte changes all over the pickle of `irra.pth` (CRC fixed, so the pickle reader
/// sees them) give a map or an error, never a panic, hang or huge allocation.
#[test]
fn byte_flips_never_panic() {
    let bytes = std::fs::read(pt("irra.pth")).unwrap();
    let dir = std::env::temp_dir().join(format!("gadms-pt-flip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("flip.pth");
    let (_, pkl) = entry(&bytes, b"irra/data.pkl");
    let mut outcomes = [0usize; 2];
    for i in pkl.step_by(2) {
        for v in [0x00, 0xff, 0x7f, bytes[i] ^ 0x01] {
            let mut b = bytes.clone();
            b[i] = v;
            std::fs::write(&p, fix_crc(b, b"irra/data.pkl")).unwrap();
            outcomes[read_file(&p).is_ok() as usize] += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(outcomes[0] > 100 && outcomes[1] > 0, "{outcomes:?}");
}
