//! The end-of-run report of a GA-DMS run's score table (src/train/score_report.rs) on a score
//! table set by hand: one caption scored all 0 (every token noise), one all 1, the rest left at
//! the initial 0.85.

use crate::packed::tiny_packed;
use gadms::train::score_report::score_report;
use gadms_data::manifest::Dataset;
use gadms_data::masking::{MaskingConfig, is_maskable};
use gadms_data::scores::{SCORE_CTX, ScoreTable};
use gadms_data::tokenizer::EOT;

/// Word pieces before EOT of each caption of `data`, and their ids.
fn word_pieces(data: &Dataset) -> Vec<Vec<u32>> {
    (0..data.len())
        .map(|i| {
            let (s, at) = data.locate(i).unwrap();
            let ids = data.shards[s].sample(at).unwrap().ids;
            ids.iter()
                .take_while(|&&id| id != EOT)
                .copied()
                .filter(|&id| is_maskable(id))
                .collect()
        })
        .collect()
}

#[test]
fn score_report_counts_what_moved_and_names_the_tokens() {
    let dir = std::env::temp_dir().join(format!("gadms-score-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (train, _) = tiny_packed(&dir);
    let data = Dataset::open(&train, None).unwrap();
    let table = ScoreTable::in_memory(data.len());
    table.set(0, &[0.0; SCORE_CTX]);
    table.set(1, &[1.0; SCORE_CTX]);
    let cfg = MaskingConfig::default();
    let r = score_report(&data, &table, &cfg).unwrap();

    let pieces = word_pieces(&data);
    let total: usize = pieces.iter().map(Vec::len).sum();
    let (n0, n1) = (pieces[0].len(), pieces[1].len());
    assert!(n0 > 0 && n1 > 0);
    assert_eq!(r.captions, data.len());
    assert_eq!(r.tokens, total);
    // Score 0 moves p_noise from ~6e-8 to 0.176: changed and judged noise. Score 1 leaves
    // both curves within 0.01 of their values at 0.85 (p_info 0.2999 vs 0.3, p_noise ~0).
    assert_eq!(r.changed, n0);
    assert_eq!(r.judged_noise, n0);
    let mean = (0.85f64 * (total - n0 - n1) as f64 + n1 as f64) / total as f64;
    assert!(
        (r.mean_score - mean).abs() < 1e-6,
        "{} vs {mean}",
        r.mean_score
    );
    // Every token judged noise occurs in caption 0; ranked tokens occur at least 5 times.
    assert!(!r.noise_tokens.is_empty());
    for (_, frac, n) in &r.noise_tokens {
        assert!(*n >= 5 && *frac > 0.0 && *frac <= 1.0);
    }
    let text = r.to_string();
    assert!(text.contains("most often judged noise"), "{text}");
    assert!(
        text.contains(&format!("{total} word-piece tokens")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
