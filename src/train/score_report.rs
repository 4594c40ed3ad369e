//! What GA-DMS's score table did over a run (docs/method.md §3.2, §4.1), printed at the end of
//! `gadms pretrain --objective ga-dms`: how far the per-token GASS scores moved from their
//! initial 0.85, how many tokens' masking probabilities changed with them, and which caption
//! tokens the run came to judge noise (low score: masked in the SDM copy) and informative (high
//! score: masked for MTP).

use anyhow::{Context, Result};
use gadms_data::manifest::Dataset;
use gadms_data::masking::{MaskingConfig, is_maskable};
use gadms_data::scores::{INIT_SCORE, SCORE_CTX, ScoreTable};
use gadms_data::tokenizer::{ClipTokenizer, EOT};
use std::collections::HashMap;

/// Captions read for the report at most (evenly spaced over the table): bounds its time on a
/// WebPerson-size run.
pub const MAX_CAPTIONS: usize = 200_000;
/// A masking probability "changed" when it moved by more than this from its initial value.
pub const CHANGED: f64 = 0.01;
/// Occurrences a token needs to be ranked.
pub const MIN_COUNT: usize = 5;
/// Tokens listed per ranking.
pub const TOP: usize = 6;

/// Statistics of one token id over the scanned captions.
#[derive(Clone, Copy, Debug, Default)]
struct TokenStat {
    count: usize,
    noise: usize,
    score_sum: f64,
}

/// The report's numbers.
#[derive(Clone, Debug)]
pub struct ScoreReport {
    /// Captions scanned.
    pub captions: usize,
    /// Word-piece positions scanned (maskable tokens before EOT).
    pub tokens: usize,
    /// Mean score of those positions now (all were [`INIT_SCORE`] at the start).
    pub mean_score: f64,
    /// Positions whose noise- or informative-masking probability moved by more than
    /// [`CHANGED`] from its value at the initial score.
    pub changed: usize,
    /// Positions now masked in the SDM copy with at least half the noise cap α_n.
    pub judged_noise: usize,
    /// Tokens most often judged noise: (text, fraction judged noise, occurrences).
    pub noise_tokens: Vec<(String, f64, usize)>,
    /// Tokens with the highest mean score: (text, mean score, occurrences).
    pub informative_tokens: Vec<(String, f64, usize)>,
}

/// Scans (up to [`MAX_CAPTIONS`] of) the training captions of `data` against their rows of
/// `scores` (row = sample index).
pub fn score_report(
    data: &Dataset,
    scores: &ScoreTable,
    cfg: &MaskingConfig,
) -> Result<ScoreReport> {
    let n = scores.rows().min(data.len());
    let stride = n.div_ceil(MAX_CAPTIONS).max(1);
    let (p_noise0, p_info0) = (cfg.p_noise(INIT_SCORE), cfg.p_info(INIT_SCORE));
    let noise_at = cfg.alpha_n / 2.0;
    let mut stats: HashMap<u32, TokenStat> = HashMap::new();
    let mut r = ScoreReport {
        captions: 0,
        tokens: 0,
        mean_score: 0.0,
        changed: 0,
        judged_noise: 0,
        noise_tokens: vec![],
        informative_tokens: vec![],
    };
    let mut sum = 0.0;
    for i in (0..n).step_by(stride) {
        if data.is_skipped(i) {
            continue;
        }
        let Some((shard, at)) = data.locate(i) else {
            continue;
        };
        let ids = data.shards[shard]
            .sample(at)
            .with_context(|| format!("reading caption {i} for the score report"))?
            .ids;
        let row = scores.get(i);
        r.captions += 1;
        for (&id, &s) in ids.iter().zip(&row).take(SCORE_CTX) {
            if id == EOT {
                break;
            }
            if !is_maskable(id) {
                continue;
            }
            let (pn, pi) = (cfg.p_noise(s), cfg.p_info(s));
            let noise = pn >= noise_at;
            r.tokens += 1;
            sum += s as f64;
            r.changed +=
                usize::from((pn - p_noise0).abs() > CHANGED || (pi - p_info0).abs() > CHANGED);
            r.judged_noise += usize::from(noise);
            let st = stats.entry(id).or_default();
            st.count += 1;
            st.noise += usize::from(noise);
            st.score_sum += s as f64;
        }
    }
    r.mean_score = sum / r.tokens.max(1) as f64;
    let tok = ClipTokenizer::new().context("loading the tokenizer for the score report")?;
    let mut ranked: Vec<(u32, TokenStat)> = stats
        .into_iter()
        .filter(|(_, s)| s.count >= MIN_COUNT)
        .collect();
    // Ties: more occurrences first, then the smaller id (a fixed order on every run).
    ranked.sort_by(|a, b| {
        let (fa, fb) = (
            a.1.noise as f64 / a.1.count as f64,
            b.1.noise as f64 / b.1.count as f64,
        );
        fb.total_cmp(&fa)
            .then(b.1.count.cmp(&a.1.count))
            .then(a.0.cmp(&b.0))
    });
    r.noise_tokens = ranked
        .iter()
        .take_while(|(_, s)| s.noise > 0)
        .take(TOP)
        .map(|(id, s)| (tok.decode(&[*id]), s.noise as f64 / s.count as f64, s.count))
        .collect();
    let mean = |s: &TokenStat| s.score_sum / s.count as f64;
    ranked.sort_by(|a, b| {
        mean(&b.1)
            .total_cmp(&mean(&a.1))
            .then(b.1.count.cmp(&a.1.count))
            .then(a.0.cmp(&b.0))
    });
    r.informative_tokens = ranked
        .iter()
        .take(TOP)
        .map(|(id, s)| (tok.decode(&[*id]), mean(s), s.count))
        .collect();
    Ok(r)
}

impl std::fmt::Display for ScoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |a: usize| 100.0 * a as f64 / self.tokens.max(1) as f64;
        writeln!(
            f,
            "GASS score table ({} captions, {} word-piece tokens): mean score {INIT_SCORE:.2} -> \
             {:.3}; masking probability changed (> {CHANGED}) for {:.1} % of tokens; {:.1} % now \
             judged noise (noise-masking probability >= alpha_n/2)",
            self.captions,
            self.tokens,
            self.mean_score,
            pct(self.changed),
            pct(self.judged_noise)
        )?;
        let list = |v: &[(String, f64, usize)], pct: bool| {
            v.iter()
                .map(|(t, x, n)| match pct {
                    true => format!("'{t}' {:.0}% of {n}", 100.0 * x),
                    false => format!("'{t}' {x:.2} ({n}x)"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.noise_tokens.is_empty() {
            true => writeln!(f, "  no token judged noise yet")?,
            false => writeln!(
                f,
                "  most often judged noise (SDM copy masks them): {}",
                list(&self.noise_tokens, true)
            )?,
        }
        write!(
            f,
            "  most informative (highest mean score; MTP copy masks them): {}",
            list(&self.informative_tokens, false)
        )
    }
}
