//! `gadms plot`: training curves of a run from its `metrics.jsonl`: loss parts, learning rate,
//! throughput and evaluation metrics against the step, as one SVG (drawn with `plotters`) or a
//! PNG (that SVG rendered by headless Chromium).

use crate::screenshot::{find_chromium, screenshot};
use anyhow::{Context, Result, bail};
use argh::FromArgs;
use gadms_ckpt::tensors::write_atomic;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Plot a run's curves from RUN_DIR/metrics.jsonl: losses, lr, pairs (images)/s and the
/// evaluation metrics over steps.
#[derive(FromArgs)]
#[argh(subcommand, name = "plot")]
pub struct PlotArgs {
    /// run directory (holding metrics.jsonl)
    #[argh(positional)]
    pub run_dir: PathBuf,
    /// output file, .svg or .png (default RUN_DIR/curves.svg)
    #[argh(option)]
    pub out: Option<PathBuf>,
}

/// The series of a metrics file: step-line keys and evaluation keys, each a list of
/// (step, value).
#[derive(Clone, Debug, Default)]
pub struct Curves {
    /// Per-step values by key (`loss`, `loss_sdm`, `lr`, `pairs_per_s`, …).
    pub train: BTreeMap<String, Vec<(f64, f64)>>,
    /// Evaluation values by `"key (split)"` (`r1 (test)`, …).
    pub eval: BTreeMap<String, Vec<(f64, f64)>>,
}

const EVAL_KEYS: &[&str] = &["r1", "r5", "r10", "map", "minp"];

/// Reads `metrics.jsonl`: lines with a `split` are evaluations, the others training steps;
/// non-numeric fields are ignored. A malformed line is an error naming its number.
pub fn read_curves(path: &Path) -> Result<Curves> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut c = Curves::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON line", path.display(), i + 1))?;
        let Some(obj) = v.as_object() else {
            bail!("{}:{}: not a JSON object", path.display(), i + 1);
        };
        let Some(step) = obj.get("step").and_then(|s| s.as_f64()) else {
            continue;
        };
        if let Some(split) = obj.get("split").and_then(|s| s.as_str()) {
            for k in EVAL_KEYS {
                if let Some(x) = obj.get(*k).and_then(|x| x.as_f64()) {
                    c.eval
                        .entry(format!("{k} ({split})"))
                        .or_default()
                        .push((step, x));
                }
            }
        } else {
            for (k, x) in obj {
                if k == "step" || k == "epoch" {
                    continue;
                }
                if let Some(x) = x.as_f64().filter(|x| x.is_finite()) {
                    c.train.entry(k.clone()).or_default().push((step, x));
                }
            }
        }
    }
    if c.train.is_empty() && c.eval.is_empty() {
        bail!("{}: no metrics to plot", path.display());
    }
    Ok(c)
}

/// Centred moving average over `w` points (w = 1 leaves the series unchanged).
fn smooth(v: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    if w <= 1 {
        return v.to_vec();
    }
    let h = w / 2;
    (0..v.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(h), (i + h + 1).min(v.len()));
            (
                v[i].0,
                v[a..b].iter().map(|p| p.1).sum::<f64>() / (b - a) as f64,
            )
        })
        .collect()
}

fn range(series: &[&[(f64, f64)]], pad_zero: bool) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let pts = series.iter().flat_map(|s| s.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0..1.0, 0.0..1.0);
    }
    if pad_zero {
        y0 = y0.min(0.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let dy = (y1 - y0).max(1e-12);
    (x0..x1, (y0 - 0.05 * dy)..(y1 + 0.05 * dy))
}

const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One panel: named series, a title and a y label; points drawn when a series is short.
fn panel(
    area: &Area<'_>,
    title: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
    pad_zero: bool,
) -> Result<()> {
    let refs: Vec<&[(f64, f64)]> = series.iter().map(|s| s.1.as_slice()).collect();
    let (xr, yr) = range(&refs, pad_zero);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(xr, yr)
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(ylabel)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    if series.is_empty() {
        return Ok(());
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let col = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
        if pts.len() <= 40 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, col.filled())))
                .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    Ok(())
}

/// Draws the four panels (losses, lr, throughput, evaluation) as an SVG document.
pub fn render_svg(c: &Curves, title: &str) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 800)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let panels = root.split_evenly((2, 2));
        let n = c.train.values().map(Vec::len).max().unwrap_or(0);
        let w = (n / 100).max(1);
        let avg = if w > 1 {
            format!(" (moving average over {w} steps)")
        } else {
            String::new()
        };
        let pick =
            |pred: &dyn Fn(&str) -> bool, smooth_w: usize| -> Vec<(String, Vec<(f64, f64)>)> {
                c.train
                    .iter()
                    .filter(|(k, _)| pred(k))
                    .map(|(k, v)| (k.clone(), smooth(v, smooth_w)))
                    .collect()
            };
        let losses = pick(&|k| k.starts_with("loss"), w);
        let lr = pick(&|k| k == "lr", 1);
        let rate = pick(&|k| k.ends_with("_per_s"), w);
        let eval: Vec<(String, Vec<(f64, f64)>)> =
            c.eval.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        panel(&panels[0], &format!("loss{avg}"), "loss", &losses, false)?;
        panel(&panels[1], "learning rate", "lr", &lr, true)?;
        panel(
            &panels[2],
            &format!("throughput{avg}"),
            "image-text pairs / s",
            &rate,
            true,
        )?;
        panel(&panels[3], "evaluation (×100)", "metric", &eval, true)?;
        root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    Ok(svg)
}

/// Runs the command.
pub fn run(a: PlotArgs) -> Result<()> {
    let metrics = a.run_dir.join("metrics.jsonl");
    if !metrics.is_file() {
        bail!(
            "{}: no metrics.jsonl in the run directory (is it a `gadms pretrain --out` directory?)",
            a.run_dir.display()
        );
    }
    let c = read_curves(&metrics)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.run_dir.join("curves.svg"));
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let title = format!("gadms run {}", a.run_dir.display());
    let svg = render_svg(&c, &title)?;
    match ext.as_str() {
        "svg" => write_atomic(&out, svg.as_bytes())
            .map_err(|m| anyhow::anyhow!("{}: {m}", out.display()))?,
        "png" => {
            let Some(chrome) = find_chromium() else {
                bail!(
                    "{}: PNG output renders the SVG with headless Chromium, which is not installed \
                     (apt-get install chromium); use --out FILE.svg",
                    out.display()
                );
            };
            let html = format!(
                "<!DOCTYPE html><html><body style=\"margin:0;background:#fff\">{svg}</body></html>"
            );
            screenshot(&chrome, &html, &out, (1200, 800))?;
        }
        _ => bail!("--out {}: the file must end in .svg or .png", out.display()),
    }
    let steps = c.train.values().map(Vec::len).max().unwrap_or(0);
    println!(
        "plotted {steps} steps ({}) and {} evaluation series from {} to {}",
        c.train.keys().cloned().collect::<Vec<_>>().join(", "),
        c.eval.len(),
        metrics.display(),
        out.display()
    );
    Ok(())
}
