//! `gadms eval`: text→image retrieval metrics of a model on a packed test split (IRRA protocol,
//! docs/method.md §7), and `--bench-random N`, the ranking benchmark. The evaluation itself
//! (reading the split, encoding, similarity, ranking) is [`crate::eval`]'s.

use crate::eval::rank::{RankMetrics, order_of, random_problem, rank_metrics, similarity_par};
use crate::eval::{EvalSet, encode_set, l2_normalize_rows};
use crate::preset::Preset;
use crate::train::data::{skip_damaged, skip_json};
use crate::weights::{build_loaded, read_with_preset};
use crate::with_preset;
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_ckpt::tensors::write_atomic;
use gadms_data::manifest::Dataset;
use gadms_data::tokenizer::tokenizer_hash;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Text→image retrieval on a `gadms pack` output: queries = every caption, gallery = every
/// distinct image, relevant = same person id; R1/R5/R10/mAP/mINP (×100), ties broken by
/// ascending gallery index.
#[derive(FromArgs)]
#[argh(subcommand, name = "eval")]
pub struct EvalArgs {
    /// device: cpu or cuda[:N] (default cpu; cuda needs a build with the `cuda` feature,
    /// scripts/build-cuda.sh)
    #[argh(option, default = "Default::default()")]
    pub device: crate::device::DeviceChoice,
    /// precision of the matrix products on CUDA: f32 (default), tf32 or bf16 (tensor cores
    /// with f32 sums; docs/gpu.md); the CPU computes in f32 only
    #[argh(option)]
    pub precision: Option<crate::precision::Precision>,
    /// weight file (OpenAI/open_clip, HF CLIPModel or gadms safetensors)
    #[argh(option)]
    pub weights: Option<PathBuf>,
    /// model preset (vit-b-16 or tiny); inferred from the tensor shapes when omitted
    #[argh(option)]
    pub preset: Option<Preset>,
    /// packed test split (a `gadms pack` output directory)
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// images or captions per forward pass (default 64)
    #[argh(option, default = "64")]
    pub batch_size: usize,
    /// write the metrics as JSON (keys r1, r5, r10, map, minp, …)
    #[argh(option)]
    pub json: Option<PathBuf>,
    /// write the similarity matrix (`sims` [Q, G] f32) with `query_pids` and `gallery_pids`
    /// (i64) to this safetensors file
    #[argh(option)]
    pub save_sims: Option<PathBuf>,
    /// also report image→text retrieval (queries = images, gallery = captions)
    #[argh(switch)]
    pub i2t: bool,
    /// benchmark the ranking alone on a random N×N similarity matrix (N/20 identities, like
    /// ICFG-PEDES) instead of evaluating a model
    #[argh(option)]
    pub bench_random: Option<usize>,
    /// verify every sample of --data first and leave the damaged ones out (listed on stderr
    /// and in --json) instead of stopping at the first one
    #[argh(switch)]
    pub skip_corrupt: bool,
}

/// Text→image metrics, and image→text ones when asked, as written by `--json` (keys r1, r5,
/// r10, map, minp, chance_r1, queries, gallery, identities, ties, data, weights[, i2t][,
/// skipped]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    /// Text→image metrics (queries = captions, gallery = images).
    #[serde(flatten)]
    pub t2i: RankMetrics,
    /// Distinct person ids.
    pub identities: usize,
    /// The tie convention.
    pub ties: &'static str,
    /// Dataset directory.
    pub data: String,
    /// Weight file.
    pub weights: String,
    /// Image→text metrics (`--i2t`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub i2t: Option<RankMetrics>,
    /// The damaged samples `--skip-corrupt` left out (count, fingerprint, the first ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<serde_json::Value>,
}

/// The tie convention, stated in every output.
pub const TIES: &str = "ties broken by ascending gallery index (stable sort)";

/// Runs the command.
pub fn run(a: EvalArgs) -> Result<()> {
    if let Some(n) = a.bench_random {
        return bench_random(n);
    }
    let (Some(weights), Some(data)) = (&a.weights, &a.data) else {
        bail!("eval needs --weights W and --data DIR (or --bench-random N)");
    };
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut ds = open_eval_data(data)?;
    if a.skip_corrupt {
        skip_damaged(&mut ds, "--data")?;
    }
    let ds = Arc::new(ds);
    let (w, preset) = read_with_preset(weights, a.preset)?;
    let spec = preset.spec();
    let (h, wd) = (spec.vision.image_h, spec.vision.image_w);
    let c = &ds.manifest.config;
    if (c.image_h as usize, c.image_w as usize) != (h, wd) {
        eprintln!(
            "warning: {} was packed at {}x{}, preset {} takes {h}x{wd}: images are resized \
             (bilinear) for evaluation",
            data.display(),
            c.image_h,
            c.image_w,
            spec.name
        );
    }
    let t0 = Instant::now();
    let set = EvalSet::streamed(ds.clone(), h, wd)?;
    let (qp, gp) = (&set.caption_pid, &set.image_pid);
    check_pids(qp, gp, data, &c.dataset)?;
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let feats = crate::with_device!(a.device, 0, precision = crate::precision::Precision::for_inference(a.precision, a.device)?, D, dev => with_preset!(preset, D, M => {
        let m: M = build_loaded(&dev, w, weights)?;
        crate::eval::with_progress(|| encode_set(&m, &set, a.batch_size))?
    }))?;
    let enc_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let sims = feats.text_to_image()?;
    let t2i = rank_metrics(&sims, qp, gp)?;
    let i2t = if a.i2t {
        Some(rank_metrics(&feats.image_to_text()?, gp, qp)?)
    } else {
        None
    };
    let rank_s = t2.elapsed().as_secs_f64();
    let ids = gp.iter().collect::<HashSet<_>>().len();
    let left_out = match ds.damaged().len() {
        0 => String::new(),
        1 => " (1 damaged sample left out)".to_string(),
        n => format!(" ({n} damaged samples left out)"),
    };
    println!(
        "text→image retrieval on {} ({} {}): {} queries, {} gallery images, {ids} ids{left_out}; \
         {TIES}",
        data.display(),
        c.dataset,
        c.split,
        t2i.queries,
        t2i.gallery
    );
    print_table("text→image", &t2i);
    if let Some(m) = &i2t {
        print_table("image→text", m);
    }
    println!(
        "chance R1 {:.2}; load {load_s:.1} s, encode {enc_s:.1} s ({:.0} items/s), rank {rank_s:.2} s",
        t2i.chance_r1,
        (gp.len() + qp.len()) as f64 / enc_s.max(1e-9)
    );
    let report = EvalReport {
        t2i,
        identities: ids,
        ties: TIES,
        data: data.display().to_string(),
        weights: weights.display().to_string(),
        i2t,
        skipped: a.skip_corrupt.then(|| skip_json(&ds)),
    };
    if let Some(p) = &a.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        write_atomic(p, s.as_bytes()).map_err(|m| anyhow::anyhow!("{}: {m}", p.display()))?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &a.save_sims {
        save_sims(p, &sims, qp, gp, weights, data)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Opens a packed split for evaluation with a clear error when it is not one.
pub fn open_eval_data(dir: &Path) -> Result<Dataset> {
    let ds = Dataset::open(dir, Some(&tokenizer_hash()))
        .with_context(|| format!("--data {}: not a usable `gadms pack` output", dir.display()))?;
    if ds.is_empty() {
        bail!("--data {}: the dataset holds no samples", dir.display());
    }
    Ok(ds)
}

/// Refuses splits whose captions' person ids do not identify gallery images (WebPerson packs
/// give every caption its own pid; retrieval metrics need shared person ids).
fn check_pids(qp: &[u64], gp: &[u64], dir: &Path, dataset: &str) -> Result<()> {
    let ids: HashSet<u64> = gp.iter().copied().collect();
    let missing = qp.iter().filter(|p| !ids.contains(p)).count();
    if dataset.starts_with("webperson") {
        bail!(
            "--data {}: a {dataset} pack has no person ids (each caption gets its own pid), so \
             retrieval metrics are undefined; evaluate on a cuhk-pedes, icfg-pedes or rstpreid \
             test split",
            dir.display()
        );
    }
    if missing > 0 {
        bail!(
            "--data {}: {missing} of {} captions have a person id that no gallery image has, so \
             the manifest does not carry usable person ids for retrieval (is this a {dataset} \
             pack without identities?)",
            dir.display(),
            qp.len()
        );
    }
    Ok(())
}

fn print_table(dir: &str, m: &RankMetrics) {
    println!("  {dir:<11}     R1     R5    R10    mAP   mINP");
    println!(
        "  {:<11} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2}",
        "", m.r1, m.r5, m.r10, m.map, m.minp
    );
}

/// Writes `sims` [Q, G] (f32) and the pids (i64) as safetensors with magic/version metadata.
fn save_sims(
    path: &Path,
    sims: &[f32],
    qp: &[u64],
    gp: &[u64],
    weights: &Path,
    data: &Path,
) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let s_bytes: Vec<u8> = sims.iter().flat_map(|x| x.to_le_bytes()).collect();
    let q_bytes: Vec<u8> = qp.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect();
    let g_bytes: Vec<u8> = gp.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect();
    let views = vec![
        (
            "sims",
            TensorView::new(Dtype::F32, vec![qp.len(), gp.len()], &s_bytes)?,
        ),
        (
            "query_pids",
            TensorView::new(Dtype::I64, vec![qp.len()], &q_bytes)?,
        ),
        (
            "gallery_pids",
            TensorView::new(Dtype::I64, vec![gp.len()], &g_bytes)?,
        ),
    ];
    let meta = std::collections::HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("gadms.magic".to_string(), "gadms-sims".to_string()),
        ("gadms.version".to_string(), "1".to_string()),
        ("gadms.ties".to_string(), TIES.to_string()),
        ("gadms.weights".to_string(), weights.display().to_string()),
        ("gadms.data".to_string(), data.display().to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(meta))?;
    write_atomic(path, &bytes).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))
}

/// `--bench-random N`: times the counting ranking on an N×N random matrix (N/20 ids, so 20
/// positives per query as in ICFG-PEDES), and a full stable sort per query on a sample of rows
/// for comparison.
/// Bytes `--bench-random N` holds at its peak: the N×N f32 matrix being ranked, the N×N
/// product of the gemm timing and two N×512 feature matrices; `None` when that overflows.
pub fn bench_memory(n: usize) -> Option<u64> {
    let n = n as u64;
    let square = n.checked_mul(n)?.checked_mul(8)?;
    square.checked_add(n.checked_mul(2 * 512 * 4)?)
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux), else `None`.
fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Refuses an `--bench-random N` whose matrices would not fit: more than 80% of the available
/// memory (or 8 GiB where that is unknown), before anything is allocated.
fn check_bench_memory(n: usize) -> Result<()> {
    const GIB: f64 = (1u64 << 30) as f64;
    let (cap, what) = match available_memory() {
        Some(b) => (b / 10 * 8, "80% of the available memory"),
        None => (8 << 30, "the 8 GiB cap (available memory unknown)"),
    };
    // The largest N that fits: 8N² + 4096N ≤ cap, solved, then stepped down past rounding.
    let mut largest = ((4096f64 * 4096.0 + 32.0 * cap as f64).sqrt() - 4096.0) as usize / 16;
    while largest > 0 && bench_memory(largest).is_none_or(|b| b > cap) {
        largest -= 1;
    }
    match bench_memory(n) {
        Some(b) if b <= cap => Ok(()),
        need => bail!(
            "--bench-random {n} would need {} (two {n}×{n} f32 matrices), more than {what} ({:.1} GiB); \
             use N ≤ {}",
            need.map_or("more than 16 EiB".into(), |b| format!(
                "{:.1} GiB",
                b as f64 / GIB
            )),
            cap as f64 / GIB,
            largest
        ),
    }
}

fn bench_random(n: usize) -> Result<()> {
    if n == 0 {
        bail!("--bench-random needs N ≥ 1");
    }
    check_bench_memory(n)?;
    let ids = (n / 20).max(1);
    let t = Instant::now();
    let (sim, q, g) = random_problem(n, n, ids, 42);
    let gen_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let m = rank_metrics(&sim, &q, &g)?;
    let rank_s = t.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    println!(
        "random {n}×{n} similarity, {ids} ids ({} positives/query), {threads} threads: generated in {gen_s:.2} s",
        n / ids
    );
    println!(
        "counting ranking: {rank_s:.3} s  (R1 {:.3}, R5 {:.3}, R10 {:.3}, mAP {:.3}, mINP {:.3}; chance R1 {:.3})",
        m.r1, m.r5, m.r10, m.map, m.minp, m.chance_r1
    );
    // The similarity matrix itself from random 512-d unit features (ViT-B/16's embed size).
    let feats = |seed: u64| {
        let (v, _, _) = random_problem(n, 512, 1, seed);
        l2_normalize_rows(v, 512)
    };
    let (ta, ia) = (feats(1), feats(2));
    let t = Instant::now();
    let s = similarity_par(&ta, &ia, 512);
    let sim_s = t.elapsed().as_secs_f64();
    std::hint::black_box(&s);
    drop(s);
    println!("similarity {n}×512 · ({n}×512)ᵀ (gemm): {sim_s:.3} s");
    // Full sort per query on a sample of rows, one thread, extrapolated.
    let sample = n.min(200);
    let t = Instant::now();
    let mut acc = 0usize;
    for r in 0..sample {
        acc += order_of(&sim[r * n..(r + 1) * n])[0];
    }
    let sort_s = t.elapsed().as_secs_f64() * n as f64 / sample as f64;
    std::hint::black_box(acc);
    println!(
        "full stable sort per query (IRRA's argsort), 1 thread: {sort_s:.1} s extrapolated from {sample} rows"
    );
    Ok(())
}
