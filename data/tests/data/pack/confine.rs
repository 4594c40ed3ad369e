//! `pack` reads only regular files inside the dataset root (helpers from the parent module).

use super::*;

/// Image paths from a dataset file stay inside the dataset root: `..` and absolute paths are
/// rejected on their text (nothing outside is opened or probed), symbolic links that leave the
/// root, FIFOs and oversized files are rejected without being read, and the rest packs.
#[test]
fn image_paths_are_confined_to_the_dataset_root() {
    let dir = tmpdir("confined");
    let (src, outside) = (dir.join("src"), dir.join("secret"));
    std::fs::create_dir_all(src.join("imgs")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let png = std::fs::read(fixture("cuhk_pedes/imgs/CUHK01/0001001.png")).unwrap();
    std::fs::write(src.join("imgs/ok.png"), &png).unwrap();
    std::fs::write(outside.join("x.png"), &png).unwrap();
    std::os::unix::fs::symlink(outside.join("x.png"), src.join("imgs/link.png")).unwrap();
    let fifo = src.join("imgs/fifo.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let big = std::fs::File::create(src.join("imgs/big.png")).unwrap();
    big.set_len(65 << 20).unwrap();
    let rows: Vec<String> = ["ok.png", "../../secret/x.png", "/etc/passwd", "link.png", "fifo.png", "big.png"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                r#"{{"split": "train", "captions": ["A woman in a red coat."], "id": {}, "file_path": "{p}"}}"#,
                i + 1
            )
        })
        .collect();
    std::fs::write(src.join("reid_raw.json"), format!("[{}]", rows.join(","))).unwrap();
    let out = dir.join("out");
    let r = run(&opts(Format::CuhkPedes, &src, &out));
    assert_eq!(r.manifest.samples, 1);
    let got = rejects(&out);
    let reasons: Vec<&str> = got.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 5, "{reasons:#?}");
    let outside_root = "is outside the dataset root";
    assert!(reasons[0].contains(outside_root) && reasons[0].contains("../../secret/x.png"));
    assert!(reasons[1].contains(outside_root) && reasons[1].contains("/etc/passwd"));
    assert!(reasons[2].contains(outside_root) && reasons[2].contains("link.png"));
    assert!(reasons[3].contains("not a regular file"), "{}", reasons[3]);
    assert!(reasons[4].contains("byte limit"), "{}", reasons[4]);
    // With --follow-symlinks the link is read; `..` stays refused.
    let out2 = dir.join("out2");
    let r = run(&PackOptions {
        follow_symlinks: true,
        ..opts(Format::CuhkPedes, &src, &out2)
    });
    assert_eq!(r.manifest.samples, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
