//! Parity of `gadms_data::tokenizer` with open_clip's `SimpleTokenizer` / `open_clip.tokenize`.
//!
//! Fixtures come from `fixtures/tokenizer/make.py` (open-clip-torch 3.3.0,
//! ftfy 6.3.1); Python is not needed to run these tests.

use std::path::PathBuf;
use std::sync::OnceLock;

use gadms_data::text_clean::{clean_caption, fix_text, html_unescape};
use gadms_data::tokenizer::DROPPED_MERGE;
use gadms_data::{CONTEXT_LEN, ClipTokenizer, EOT, MASK, PAD, SOT, TokenizerError, VOCAB_SIZE};
use serde_json::Value;

fn tok() -> &'static ClipTokenizer {
    static TOK: OnceLock<ClipTokenizer> = OnceLock::new();
    TOK.get_or_init(|| ClipTokenizer::new().expect("tokenizer builds"))
}

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tokenizer")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid fixture JSON")
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn all_reference_cases_match_open_clip() {
    let data = fixture("expected_ids.json");
    let cases = data["cases"].as_array().expect("cases");
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let mut matched = 0;
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want = ids_of(&case["ids"]);
        assert_eq!(want.len(), CONTEXT_LEN);
        let cleaned = clean_caption(text);
        if cleaned != case["cleaned"].as_str().expect("cleaned") {
            failures.push(format!(
                "clean {text:?}: got {cleaned:?}, want {}",
                case["cleaned"]
            ));
        }
        let count = tok().token_count(text);
        if count as u64 != case["token_count"].as_u64().expect("token_count") {
            failures.push(format!(
                "token_count {text:?}: got {count}, want {}",
                case["token_count"]
            ));
        }
        let got = tok().encode(text);
        if case["empty"].as_bool().expect("empty") {
            match got {
                Err(TokenizerError::EmptyCaption { .. }) => matched += 1,
                other => failures.push(format!("{text:?}: want EmptyCaption, got {other:?}")),
            }
            continue;
        }
        match got {
            Ok(ids) if ids.as_slice() == want.as_slice() => matched += 1,
            Ok(ids) => failures.push(format!("ids {text:?}:\n got  {ids:?}\n want {want:?}")),
            Err(e) => failures.push(format!("{text:?}: error {e}")),
        }
        if let Some(oc) = case.get("open_clip_ids") {
            // Only the dropped merge may make us differ from open_clip, and only where open_clip
            // emitted the old `jekyll</w>` id (= MASK in this vocabulary).
            assert!(ids_of(oc).contains(&MASK), "{text:?}");
            assert!(text.to_lowercase().contains("jekyll"), "{text:?}");
        }
    }
    eprintln!("{matched}/{} reference cases match", cases.len());
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn clean_up_matches_ftfy_and_html_unescape() {
    let data = fixture("ftfy_cases.json");
    let cases = data["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let checks = [
            ("fix_text", fix_text(text), &case["fix_text"]),
            ("html_unescape", html_unescape(text), &case["html_unescape"]),
            ("cleaned", clean_caption(text), &case["cleaned"]),
        ];
        for (what, got, want) in checks {
            let want = want.as_str().expect("string");
            if got != want {
                failures.push(format!("{what}({text:?}): got {got:?}, want {want:?}"));
            }
        }
    }
    eprintln!(
        "{} clean-up cases, {} mismatches",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn simple_caption_ids_and_eos_index() {
    let ids = tok().encode("A woman in a red coat.").unwrap();
    assert_eq!(&ids[..9], &[SOT, 320, 2308, 530, 320, 736, 7356, 269, EOT]);
    assert!(ids[9..].iter().all(|&x| x == PAD));
    assert_eq!(ClipTokenizer::eos_index(&ids), 8);
    assert_eq!(tok().token_count("A woman in a red coat."), 9);
    // First occurrence wins on ties, like torch.argmax.
    assert_eq!(ClipTokenizer::eos_index(&[SOT, 5, EOT, EOT, 0]), 2);
    assert_eq!(ClipTokenizer::eos_index(&[]), 0);
}

#[test]
fn truncation_keeps_eot_last() {
    let long = "a man with a red hat and a blue coat and black shoes, ".repeat(8);
    let n = tok().token_count(&long);
    assert!(n > CONTEXT_LEN, "{n}");
    let ids = tok().encode(&long).unwrap();
    assert_eq!(ids[0], SOT);
    assert_eq!(ids[CONTEXT_LEN - 1], EOT);
    assert!(
        ids[1..CONTEXT_LEN - 1]
            .iter()
            .all(|&x| x != EOT && x != SOT)
    );
    assert_eq!(ClipTokenizer::eos_index(&ids), CONTEXT_LEN - 1);
    let pieces = tok().encode_pieces(&long).unwrap();
    assert_eq!(&ids[1..CONTEXT_LEN - 1], &pieces[..CONTEXT_LEN - 2]);

    match tok().encode_strict(&long) {
        Err(e @ TokenizerError::TooLong { count, .. }) => {
            assert_eq!(count, n);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("caption has {n} tokens, more than 77")),
                "{msg}"
            );
        }
        other => panic!("expected TooLong, got {other:?}"),
    }

    // 75 pieces + SOT/EOT = 77 fits exactly; 76 pieces is truncated.
    let fits = vec!["a"; 75].join(" ");
    assert_eq!(tok().token_count(&fits), 77);
    let ids = tok().encode_strict(&fits).unwrap();
    assert_eq!(ids[76], EOT);
    assert_eq!(ids[75], 320);
    let over = vec!["a"; 76].join(" ");
    assert_eq!(tok().token_count(&over), 78);
    assert!(matches!(
        tok().encode_strict(&over),
        Err(TokenizerError::TooLong { count: 78, .. })
    ));
    assert_eq!(tok().encode(&over).unwrap(), ids);
}

#[test]
fn empty_caption_is_an_error() {
    for text in [
        "",
        " ",
        "\t\n  \r\n",
        "\u{3000}\u{a0}",
        "\u{feff}\u{0}",
        "&nbsp;",
    ] {
        match tok().encode(text) {
            Err(e @ TokenizerError::EmptyCaption { .. }) => {
                assert!(e.to_string().contains("empty"), "{e}");
            }
            other => panic!("{text:?}: expected EmptyCaption, got {other:?}"),
        }
        assert!(matches!(
            tok().encode_strict(text),
            Err(TokenizerError::EmptyCaption { .. })
        ));
        assert_eq!(tok().token_count(text), 2);
    }
    match tok().encode_batch(&["a man", "  ", "a woman"]) {
        Err(TokenizerError::Batch { index: 1, source }) => {
            assert!(matches!(*source, TokenizerError::EmptyCaption { .. }));
        }
        other => panic!("expected Batch error at index 1, got {other:?}"),
    }
}

#[test]
fn batch_equals_single() {
    let texts = ["a man in a coat", "a woman in a red dress", "café & bar"];
    let batch = tok().encode_batch(&texts).unwrap();
    assert_eq!(batch.len(), 3);
    for (t, ids) in texts.iter().zip(&batch) {
        assert_eq!(&tok().encode(t).unwrap(), ids);
    }
}

#[test]
fn decode_round_trip() {
    let t = tok();
    for (text, want) in [
        ("A woman in a red coat.", "a woman in a red coat ."),
        ("the man's bag, and jeans", "the man 's bag , and jeans"),
        ("Café 😀 naïve", "café 😀 naïve"),
        ("日本語の女性", "日本語の女性"),
        ("a man reading jekyll", "a man reading jekyll"),
    ] {
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids), want, "{text:?}");
    }
    // Padding and anything after EOT are ignored; MASK is shown as <|mask|>.
    let mut ids = t.encode("a man in a coat").unwrap();
    ids[2] = MASK;
    assert_eq!(t.decode(&ids), "a <|mask|> in a coat");
}

#[test]
fn token_strings_for_visualisation() {
    let t = tok();
    let ids = t.encode("Café in a coat!").unwrap();
    let strs = t.token_strings(&ids);
    assert_eq!(strs.len(), CONTEXT_LEN);
    let eos = ClipTokenizer::eos_index(&ids);
    assert_eq!(strs[0], "<|startoftext|>");
    assert_eq!(strs[eos], "<|endoftext|>");
    assert_eq!(strs[1..eos].concat(), "caféinacoat!");
    assert!(strs[eos + 1..].iter().all(String::is_empty));
    // A `!` (id 0 = PAD) before the EOT is a real token.
    assert_eq!(
        t.token_strings(&[SOT, PAD, EOT, PAD]),
        ["<|startoftext|>", "!", "<|endoftext|>", ""]
    );
}

#[test]
fn vocabulary_layout_and_dropped_merge() {
    let t = tok();
    assert_eq!(VOCAB_SIZE, 49408);
    assert_eq!(t.vocab_token(0), Some("!"));
    assert_eq!(t.vocab_token(256), Some("!</w>"));
    assert_eq!(t.vocab_token(MASK), Some("<|mask|>"));
    assert_eq!(t.vocab_token(SOT), Some("<|startoftext|>"));
    assert_eq!(t.vocab_token(EOT), Some("<|endoftext|>"));
    assert_eq!(t.vocab_token(VOCAB_SIZE as u32), None);
    assert_eq!(DROPPED_MERGE, ("jeky", "ll</w>"));
    // open_clip gives [SOT, 49405, EOT] (the old `jekyll</w>`, now the mask); we give jeky + ll</w>.
    let ids = t.encode("Jekyll").unwrap();
    assert_eq!(&ids[..4], &[SOT, 43893, 865, EOT]);
    assert_eq!(t.vocab_token(43893), Some("jeky"));
    assert_eq!(t.vocab_token(865), Some("ll</w>"));
    // Literal special strings: IRRA-style ones are plain text, open_clip's own become ids.
    let ids = t.encode("<|mask|>").unwrap();
    assert!(!ids.contains(&MASK));
    let ids = t.encode("a<end_of_text>b").unwrap();
    assert_eq!(&ids[..5], &[SOT, 320, EOT, 321, EOT]);
    assert_eq!(ClipTokenizer::eos_index(&ids), 2);
}
