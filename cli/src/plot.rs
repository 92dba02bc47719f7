//! `fedp2eft plot RUN`: the figures of a `reproduce` run, as PNG files in `RUN/figures/`:
//! accuracy against budget per method and pool, the PSG's λ̂ over the rounds, the ranks
//! FedP²EFT keeps per layer for each language (the paper's rank-structure figure) and the
//! cross-language λ̂ distance matrix (the paper's Fig. 4: log(d(j,k) / √(d(j,j)·d(k,k))), d the
//! mean Euclidean distance between two clients' λ̂). Text needs a TrueType font: `--font`, or
//! DejaVu Sans where Debian's fonts-dejavu-core puts it.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use serde_json::Value;

use crate::reproduce::eval::{read_rows, LambdaHat, Row};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The output folder of a `fedp2eft reproduce` run.
    pub run: PathBuf,
    /// A TrueType font for the labels [default: DejaVu Sans from fonts-dejavu-core].
    #[arg(long)]
    pub font: Option<PathBuf>,
}

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font(path: Option<&Path>) -> Result<()> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => FONTS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context(
            "no font for the figures' labels: install fonts-dejavu-core or pass --font FILE.ttf",
        )?,
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    // plotters keeps registered fonts for the whole process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a TrueType/OpenType font", path.display()))
}

fn fail(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e:?}")
}

/// One line per method: mean accuracy against the budget.
fn accuracy_vs_budget(cells: &[Value], pool: &str, path: &Path) -> Result<()> {
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for c in cells.iter().filter(|c| c["pool"] == pool) {
        let (Some(m), Some(b), Some(a)) = (
            c["method"].as_str(),
            c["budget"].as_f64(),
            c["mean"].as_f64(),
        ) else {
            continue;
        };
        lines
            .entry(m.to_string())
            .or_default()
            .push((b.max(1.0).log2(), a));
    }
    if lines.is_empty() {
        return Ok(());
    }
    let xs: Vec<f64> = lines.values().flatten().map(|p| p.0).collect();
    let ys: Vec<f64> = lines.values().flatten().map(|p| p.1).collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::MAX, f64::min),
        xs.iter().copied().fold(f64::MIN, f64::max),
    );
    let (y0, y1) = (
        ys.iter().copied().fold(f64::MAX, f64::min),
        ys.iter().copied().fold(f64::MIN, f64::max),
    );
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{pool} pool: accuracy vs budget"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        // Room on the right for the legend, clear of the largest budget's points.
        .build_cartesian_2d((x0 - 0.3)..(x1 + 1.3), (y0 - 2.0)..(y1 + 2.0))
        .map_err(fail)?;
    // Ticks at the powers of two, labelled with the budget itself.
    let budget_label = |x: &f64| {
        let k = x.round();
        if (x - k).abs() < 1e-6 && k >= 0.0 {
            format!("{}", 2f64.powf(k))
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_label_formatter(&budget_label)
        .x_desc("budget r (log scale)")
        .y_desc("mean over languages of accuracy (%)")
        .draw()
        .map_err(fail)?;
    for (i, (m, pts)) in lines.iter_mut().enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        if m.as_str() == "base" {
            let y = pts[0].1;
            let s = LineSeries::new([(x0 - 0.3, y), (x1 + 1.3, y)], color.stroke_width(1));
            chart
                .draw_series(s)
                .map_err(fail)?
                .label(m.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(fail)?
            .label(m.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(fail)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(fail)?;
    root.present().map_err(fail)
}

/// λ̂ mean and max of every round, log scale.
fn psg_curve(rounds: &[Value], path: &Path) -> Result<()> {
    let pts = |key: &str| -> Vec<(f64, f64)> {
        rounds
            .iter()
            .filter_map(|r| {
                Some((
                    r["round"].as_f64()?,
                    r["lambda_hat"][key].as_f64()?.max(1e-6),
                ))
            })
            .collect()
    };
    let (mean, max) = (pts("mean"), pts("max"));
    if mean.is_empty() {
        return Ok(());
    }
    let last = mean.iter().map(|p| p.0).fold(1.0, f64::max);
    let top = max.iter().map(|p| p.1).fold(1e-3, f64::max) * 2.0;
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("PSG: λ̂ over the rounds", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last, (5e-5f64..top).log_scale())
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("λ̂")
        .draw()
        .map_err(fail)?;
    for (i, (name, series)) in [("mean", mean), ("max", max)].into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(fail)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(fail)?;
    root.present().map_err(fail)
}

/// A labelled heat map: `rows × cols` values (NaN drawn grey) with a viridis scale.
fn heat_map(
    title: &str,
    rows: &[String],
    cols: &[String],
    v: &[Vec<f64>],
    path: &Path,
) -> Result<()> {
    let finite: Vec<f64> = v
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    let (lo, hi) = if finite.is_empty() {
        (0.0, 1.0) // nothing defined (e.g. one client per language): all grey
    } else {
        let lo = finite.iter().copied().fold(f64::MAX, f64::min);
        (lo, finite.iter().copied().fold(f64::MIN, f64::max))
    };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let w = (140 + 14 * cols.len()).max(500) as u32;
    let h = (120 + 22 * rows.len()) as u32;
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(fail)?;
    let caption = format!("{title} (min {lo:.3}, max {hi:.3}; dark = low)");
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(90)
        .build_cartesian_2d(0..cols.len(), 0..rows.len())
        .map_err(fail)?;
    let step = cols.len().div_ceil(12).max(1);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(cols.len().div_ceil(step))
        .x_label_formatter(&|i| cols.get(*i).cloned().unwrap_or_default())
        .y_labels(rows.len())
        .y_label_formatter(&|i| rows.get(*i).cloned().unwrap_or_default())
        .draw()
        .map_err(fail)?;
    chart
        .draw_series(v.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().map(move |(c, &x)| {
                let color = if x.is_finite() {
                    ViridisRGB::get_color((x - lo) / span).to_rgba()
                } else {
                    RGBColor(200, 200, 200).to_rgba()
                };
                Rectangle::new([(c, r), (c + 1, r + 1)], color.filled())
            })
        }))
        .map_err(fail)?;
    root.present().map_err(fail)
}

fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// log(d(j,k) / √(d(j,j)·d(k,k))) between languages; d(j,j) over distinct client pairs.
fn lambda_distance(lams: &[&LambdaHat]) -> (Vec<String>, Vec<Vec<f64>>) {
    let mut by: BTreeMap<&str, Vec<&[f32]>> = BTreeMap::new();
    for l in lams {
        by.entry(l.language.as_str())
            .or_default()
            .push(&l.lambda_hat);
    }
    let langs: Vec<&str> = by.keys().copied().collect();
    let d = |j: &str, k: &str| -> f64 {
        let (a, b) = (&by[j], &by[k]);
        let (mut s, mut n) = (0.0, 0usize);
        for (i, x) in a.iter().enumerate() {
            for (m, y) in b.iter().enumerate() {
                if j == k && i == m {
                    continue;
                }
                s += dist(x, y);
                n += 1;
            }
        }
        if n == 0 {
            f64::NAN
        } else {
            s / n as f64
        }
    };
    let m = langs
        .iter()
        .map(|j| {
            langs
                .iter()
                .map(|k| (d(j, k) / (d(j, j) * d(k, k)).sqrt()).ln())
                .collect()
        })
        .collect();
    (langs.iter().map(|s| s.to_string()).collect(), m)
}

pub fn run(a: &PlotArgs) -> Result<()> {
    let json_path = a.run.join("results.json");
    if !json_path.is_file() {
        bail!(
            "no results.json in {}: run `fedp2eft reproduce` to the end first",
            a.run.display()
        );
    }
    register_font(a.font.as_deref())?;
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)
        .with_context(|| format!("parsing {}", json_path.display()))?;
    let dir = a.run.join("figures");
    std::fs::create_dir_all(&dir)?;
    let cells = results["cells"].as_array().cloned().unwrap_or_default();
    let mut written = Vec::new();
    let mut pools: Vec<&str> = cells.iter().filter_map(|c| c["pool"].as_str()).collect();
    pools.sort_by_key(|p| ["seen", "unseen", "novel"].iter().position(|q| q == p));
    pools.dedup();
    for &pool in &pools {
        let p = dir.join(format!("accuracy-vs-budget-{pool}.png"));
        accuracy_vs_budget(&cells, pool, &p)?;
        written.push(p);
    }
    let rounds: Vec<Value> = read_rows(&a.run.join("psg/rounds.jsonl"))?;
    let p = dir.join("psg-lambda-hat.png");
    psg_curve(&rounds, &p)?;
    written.push(p);
    // Kept ranks per layer: mean over each language's clients, first seed of FedP²EFT.
    // The cells and λ̂ of the PSG the tables are about (a run may hold other rounds' too).
    let at = results["psg_rounds"]
        .as_u64()
        .and_then(|k| u32::try_from(k).ok());
    let at_round = |k: Option<u32>| at.is_none() || k.is_none() || k == at;
    let rows: Vec<Row> = read_rows(&a.run.join("eval/results.jsonl"))?;
    let fed: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.method, crate::reproduce::config::MethodName::Fedp2eft))
        .filter(|r| at_round(r.psg_round))
        .filter(|r| !r.ranks.is_empty())
        .collect();
    let mut keys: Vec<(String, usize)> = fed
        .iter()
        .map(|r| (r.pool.as_str().into(), r.budget))
        .collect();
    keys.sort();
    keys.dedup();
    for (pool, budget) in keys {
        let mine: Vec<&&Row> = fed
            .iter()
            .filter(|r| r.pool.as_str() == pool && r.budget == budget)
            .collect();
        let seed = mine.iter().map(|r| r.seed).min().unwrap_or_default();
        let mut by: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
        for r in mine.iter().filter(|r| r.seed == seed) {
            let e = by
                .entry(r.language.as_str())
                .or_insert_with(|| (vec![0.0; r.ranks.len()], 0));
            e.0.iter_mut()
                .zip(&r.ranks)
                .for_each(|(s, &k)| *s += k as f64);
            e.1 += 1;
        }
        let langs: Vec<String> = by.keys().map(|s| s.to_string()).collect();
        let l = by.values().map(|v| v.0.len()).max().unwrap_or(0);
        let cols: Vec<String> = (0..l).map(|i| i.to_string()).collect();
        let m: Vec<Vec<f64>> = by
            .values()
            .map(|(s, n)| s.iter().map(|x| x / *n as f64).collect())
            .collect();
        let p = dir.join(format!("ranks-{pool}-r{budget}.png"));
        let title =
            format!("FedP²EFT kept ranks per layer (module order), {pool} pool, r = {budget}");
        heat_map(&title, &langs, &cols, &m, &p)?;
        written.push(p);
    }
    let mut lams: Vec<LambdaHat> = read_rows(&a.run.join("eval/lambda-hat.jsonl"))?;
    lams.retain(|l| at_round(l.psg_round));
    for pool in ["seen", "unseen", "novel"] {
        let mine: Vec<&LambdaHat> = lams.iter().filter(|l| l.pool.as_str() == pool).collect();
        if mine.is_empty() {
            continue;
        }
        let (langs, m) = lambda_distance(&mine);
        let p = dir.join(format!("lambda-distance-{pool}.png"));
        heat_map(
            &format!("log λ̂ distance ratio, {pool} pool"),
            &langs,
            &langs,
            &m,
            &p,
        )?;
        written.push(p);
    }
    for p in &written {
        if p.is_file() {
            println!("{}", p.display());
        }
    }
    Ok(())
}
