//! `gadms search` with many queries (`--queries FILE`: one gallery encode for all of them),
//! JSON output (`--json`) and nested image folders, through the binary; the one-query table,
//! the HTML page and the cache are in `reports.rs`.

use crate::common::fixture;
use crate::reports::{TempDir, fails, first_test_caption, ok, packed_test, s, search_args};

/// `search_args` with `--query TEXT` replaced by `--queries FILE`.
fn with_queries_file(mut args: Vec<String>, file: &std::path::Path) -> Vec<String> {
    let at = args.iter().position(|a| a == "--query").unwrap();
    args[at] = "--queries".into();
    args[at + 1] = s(file);
    args
}

#[test]
fn many_queries_encode_the_gallery_once_and_print_json() {
    let d = TempDir::new("many");
    let (cap, _, pid) = first_test_caption();
    let file = d.join("q.txt");
    std::fs::write(&file, format!("{cap}\na person in a red shirt\n")).unwrap();
    let (cache, html) = (d.join("cache"), d.join("m.html"));
    let one = search_args(packed_test(), &cap, &cache, &html);
    let (table_one, _) = ok(&one);
    let many = with_queries_file(one.clone(), &file);
    let (table, err) = ok(&many);
    assert_eq!(
        err.matches("encoded 200 gallery images").count() + err.matches("from the cache").count(),
        1,
        "{err}"
    );
    assert_eq!(table.matches("top 6 of 200").count(), 2, "{table}");
    // The first query's block is the one-query run's table.
    let first_block: String = table_one.lines().take(7).collect::<Vec<_>>().join("\n");
    assert!(table.starts_with(&first_block), "{table}\n---\n{table_one}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        page.matches("<img ").count(),
        12,
        "one section of 6 cards per query"
    );

    let mut json_args = many.clone();
    json_args.push("--json".into());
    let (out, _) = ok(&json_args);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON document");
    assert_eq!(v["images"], 200);
    assert_eq!(v["pids_known"], true);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["query"], cap.as_str());
    assert_eq!(results[0]["pid"], pid, "the pid of the gallery caption");
    assert!(results[1]["pid"].is_null());
    for r in results {
        let hits = r["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 6);
        let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert_eq!(hits[0]["rank"], 1);
        assert!(hits[0]["name"].as_str().is_some() && hits[0]["pid"].is_u64());
    }
}

#[test]
fn bad_queries_files_are_clear_errors() {
    let d = TempDir::new("badq");
    let (cache, html) = (d.join("cache"), d.join("b.html"));
    let base = search_args(packed_test(), "a man", &cache, &html);
    let file = d.join("q.txt");
    std::fs::write(&file, "a man in blue\n ... \n").unwrap();
    fails(
        &with_queries_file(base.clone(), &file),
        &["q.txt:2", "no words"],
    );
    std::fs::write(&file, "").unwrap();
    fails(&with_queries_file(base.clone(), &file), &["no query"]);
    std::fs::write(&file, [0xff, 0xfe, 0x00]).unwrap();
    fails(
        &with_queries_file(base.clone(), &file),
        &["not a UTF-8 text file"],
    );
    fails(
        &with_queries_file(base.clone(), &d.join("missing.txt")),
        &["--queries", "missing.txt"],
    );
    let mut both = base.clone();
    both.extend(["--queries".into(), s(&file)]);
    fails(&both, &["not both"]);
    let none: Vec<String> = base
        .iter()
        .enumerate()
        .filter(|&(i, a)| a != "--query" && (i == 0 || base[i - 1] != "--query"))
        .map(|(_, a)| a.clone())
        .collect();
    fails(&none, &["--query TEXT or --queries FILE"]);
    std::fs::write(&file, "a man\n").unwrap();
    let mut pid = with_queries_file(base, &file);
    pid.extend(["--query-pid".into(), "3".into()]);
    fails(&pid, &["--query-pid"]);
}

/// Images in subfolders are found (sorted by path, named by it), and a folder reached again
/// through a symbolic link is listed once.
#[test]
fn folder_gallery_is_searched_recursively() {
    let d = TempDir::new("nested");
    let g = d.join("gallery");
    std::fs::create_dir_all(g.join("cam1/day2")).unwrap();
    std::fs::create_dir_all(g.join("cam2")).unwrap();
    let src = |i: usize| fixture("embed").join(format!("img{i}.png"));
    std::fs::copy(src(0), g.join("a.png")).unwrap();
    std::fs::copy(src(1), g.join("cam1/b.png")).unwrap();
    std::fs::copy(src(2), g.join("cam1/day2/c.png")).unwrap();
    std::fs::copy(fixture("embed").join("img3.jpg"), g.join("cam2/d.JPG")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(g.join("cam1"), g.join("cam2/again")).unwrap();
    let (cache, html) = (d.join("cache"), d.join("n.html"));
    let mut args = search_args(&g, "a man in a red coat", &cache, &html);
    args.push("--json".into());
    let (out, _) = ok(&args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"], 4, "{out}");
    let mut names: Vec<String> = v["results"][0]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    for (name, want) in names.iter().zip(["a.png", "b.png", "c.png", "d.JPG"]) {
        assert!(name.ends_with(want), "{names:?}");
    }
    assert!(names.iter().any(|n| n.contains("day2")), "{names:?}");
}

/// `eval`, `embed`, `search` and `explain` take `--device`: `cpu` gives the results of the
/// default, and `cuda` on a build without CUDA is a clear error, before anything is encoded;
/// and `--precision`, where `bf16` on the CPU is a clear error.
#[test]
fn inference_commands_take_a_device() {
    let d = TempDir::new("device");
    let (cap, img, _) = first_test_caption();
    let base = search_args(packed_test(), &cap, &d.join("cache"), &d.join("d.html"));
    let with = |args: &[String], dev: &str| {
        let mut v = args.to_vec();
        v.extend(["--device".into(), dev.into()]);
        v
    };
    assert_eq!(ok(&base).0, ok(&with(&base, "cpu")).0);
    let w = s(&crate::reports::weights());
    let out = s(&d.join("e.safetensors"));
    let others: [Vec<String>; 3] = [
        vec![
            "eval".into(),
            "--weights".into(),
            w.clone(),
            "--data".into(),
            s(packed_test()),
        ],
        vec![
            "embed".into(),
            "--weights".into(),
            w.clone(),
            "--out".into(),
            out,
            s(&img),
        ],
        vec![
            "explain".into(),
            "--weights".into(),
            w,
            "--image".into(),
            s(&img),
            "--text".into(),
            cap,
        ],
    ];
    for args in &others {
        ok(&with(args, "cpu"));
    }
    // `--precision`: f32 is the CPU's (and the default); a reduced one needs a GPU.
    for args in others.iter().chain([&base]) {
        let mut p = args.clone();
        p.extend(["--precision".into(), "f32".into()]);
        ok(&p);
        let mut p = args.clone();
        p.extend(["--precision".into(), "bf16".into()]);
        fails(&p, &["--precision bf16 needs a GPU"]);
    }
    if !gadms::device::CUDA_BUILT {
        for args in others.iter().chain([&base]) {
            fails(
                &with(args, "cuda"),
                &["--device cuda", "built without CUDA"],
            );
        }
    }
}
