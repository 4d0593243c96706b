//! `flix report`: one self-contained HTML page with the loss curves of each run (with the mean
//! eval loss of held-out and supervised cells when the run evaluated during training), a heatmap
//! of a metric per cell (`--metric`, exact match by default; `auto`: each task's own metric, named
//! under the task) for each evaluated run, and a heatmap of the first run minus the second
//! (held-out cells marked with `*`, cells with a feature value the run never trained with `?`),
//! each followed by a per-task table of supervised and held-out means. Plots are drawn with
//! `plotters` into inline SVG.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use flix_model::eval::periodic::{EvalRecord, MetricsLine};
use flix_model::eval::{CellKind, CellScore, EvalResult, Metric};
use flix_model::train::StepReport;

use crate::eval::{kind_mark, task_rows};
use plotters::prelude::*;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run directories whose metrics.jsonl to plot.
    #[arg(long, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// An evaluation file written by `flix eval --json`.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// The HTML file to write.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
    /// What the heatmaps show: exact, chrf, accuracy (label tasks) or auto (each task's metric).
    #[arg(long, default_value = "exact")]
    pub metric: Metric,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let runs: Vec<(String, PathBuf)> = args
        .runs
        .iter()
        .map(|d| (d.display().to_string(), d.clone()))
        .collect();
    let evals: Vec<EvalResult> = match &args.eval {
        Some(path) => serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?,
        None => Vec::new(),
    };
    write_metric_report(&args.out, &runs, &evals, args.metric)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The metrics of a run: its training steps and its evaluations during training.
struct RunMetrics {
    name: String,
    steps: Vec<StepReport>,
    evals: Vec<EvalRecord>,
}

/// Reads `metrics.jsonl` of a run directory.
fn read_metrics(name: &str, dir: &Path) -> Result<RunMetrics> {
    let path = dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut run = RunMetrics {
        name: name.to_string(),
        steps: Vec::new(),
        evals: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))? {
            MetricsLine::Step(s) => run.steps.push(s),
            MetricsLine::Eval(e) => run.evals.push(e),
        }
    }
    Ok(run)
}

/// Writes the page with exact-match heatmaps.
pub fn write_report(out: &Path, runs: &[(String, PathBuf)], evals: &[EvalResult]) -> Result<()> {
    write_metric_report(out, runs, evals, Metric::ExactMatch)
}

/// Writes the page: loss curves of `runs` (name, directory), heatmaps of `metric` of `evals`.
pub fn write_metric_report(
    out: &Path,
    runs: &[(String, PathBuf)],
    evals: &[EvalResult],
    metric: Metric,
) -> Result<()> {
    write_report_page(out, runs, evals, metric, "")
}

/// [`write_metric_report`] with `preamble` (HTML) before the plots.
pub fn write_report_page(
    out: &Path,
    runs: &[(String, PathBuf)],
    evals: &[EvalResult],
    metric: Metric,
    preamble: &str,
) -> Result<()> {
    let mut body = summary_table_html(evals, metric);
    body += preamble;
    if !runs.is_empty() {
        let curves = runs
            .iter()
            .map(|(name, dir)| read_metrics(name, dir))
            .collect::<Result<Vec<_>>>()?;
        body += "<h2>Training loss</h2>\n";
        if curves.iter().any(|c| !c.evals.is_empty()) {
            body += "<p>Thin lines: mean eval loss per cell during training, supervised cells \
                     (dots) and held-out cells (dashes).</p>\n";
        }
        body += &loss_plot(&curves)?;
    }
    for e in evals {
        body += &format!("<h2>{}: {}</h2>\n", metric.title(), html_escape(&e.name));
        body += &heatmap(e, None, metric)?;
        body += &task_table_html(e, None, metric);
    }
    if let [a, b, ..] = evals {
        body += &format!(
            "<h2>{}: {} minus {}</h2>\n",
            metric.title(),
            html_escape(&a.name),
            html_escape(&b.name)
        );
        body += &heatmap(a, Some(b), metric)?;
        body += &task_table_html(a, Some(b), metric);
    }
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>FLix report</title>\
         <style>body{{font-family:sans-serif;margin:2em}}</style></head><body>\n\
         <h1>FLix report</h1>\n<p>Held-out (zero-shot) cells are marked with *; cells with a \
         feature value the run never trained with ?.</p>\n{body}\
         </body></html>\n"
    );
    flix_core::write_atomic(out, html.as_bytes())
        .with_context(|| format!("writing {}", out.display()))
}

/// The page's opening table: per evaluated run, the mean of `metric` (%) over its supervised and
/// its held-out cells, with the cell counts.
fn summary_table_html(evals: &[EvalResult], metric: Metric) -> String {
    if evals.is_empty() {
        return String::new();
    }
    let count = |e: &EvalResult, kind: CellKind| {
        e.cells
            .iter()
            .filter(|c| c.kind() == kind && c.value(metric).is_some())
            .count()
    };
    let fmt =
        |m: Option<f64>, n: usize| m.map_or("-".to_string(), |v| format!("{:.1} ({n})", 100.0 * v));
    let mut html = format!(
        "<h2>Summary: {}</h2>\n<table border=\"1\" cellpadding=\"4\" \
         style=\"border-collapse:collapse\">\n<tr><th>run</th><th>supervised mean (cells)</th>\
         <th>held-out mean (cells)</th></tr>\n",
        metric.title()
    );
    for e in evals {
        html += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            html_escape(&e.name),
            fmt(e.mean_of(metric, false), count(e, CellKind::Supervised)),
            fmt(e.mean_of(metric, true), count(e, CellKind::HeldOut))
        );
    }
    html + "</table>\n"
}

/// The per-task table of [`task_rows`] as HTML: each task's metric, supervised and held-out
/// means (%) with their cell counts.
pub fn task_table_html(r: &EvalResult, minus: Option<&EvalResult>, metric: Metric) -> String {
    let fmt = |m: Option<f64>, n: usize| m.map_or("-".to_string(), |v| format!("{v:.1} ({n})"));
    let mut html = String::from(
        "<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\n\
         <tr><th>task</th><th>metric</th><th>supervised mean (cells)</th>\
         <th>held-out mean (cells)</th></tr>\n",
    );
    for t in task_rows(r, minus, metric) {
        html += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            html_escape(&t.task),
            html_escape(&t.metric),
            fmt(t.supervised, t.supervised_cells),
            fmt(t.heldout, t.heldout_cells)
        );
    }
    html + "</table>\n"
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e:?}")
}

/// Line colours that colour-blind readers tell apart (Okabe and Ito's palette).
const OKABE_ITO: [(u8, u8, u8); 7] = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (0, 0, 0),
];

fn loss_plot(curves: &[RunMetrics]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let max_step = curves
            .iter()
            .flat_map(|c| c.steps.iter().map(|r| r.step))
            .max()
            .unwrap_or(1) as f64;
        let eval_losses = curves.iter().flat_map(|c| {
            c.evals
                .iter()
                .flat_map(|e| [e.heldout_mean, e.supervised_mean])
                .flatten()
        });
        let max_loss = curves
            .iter()
            .flat_map(|c| c.steps.iter().map(|r| r.loss))
            .chain(eval_losses)
            .fold(0.0f64, f64::max)
            .max(1e-6);
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_step, 0.0..max_loss * 1.05)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .draw()
            .map_err(plot_err)?;
        for (i, c) in curves.iter().enumerate() {
            let (r, g, b) = OKABE_ITO[i % OKABE_ITO.len()];
            let color = RGBColor(r, g, b).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    c.steps.iter().map(|r| (r.step as f64, r.loss)),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(c.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            let points = |mean: fn(&EvalRecord) -> Option<f64>| -> Vec<(f64, f64)> {
                c.evals
                    .iter()
                    .filter_map(|e| Some((e.step as f64, mean(e)?)))
                    .collect()
            };
            let supervised = points(|e| e.supervised_mean);
            if !supervised.is_empty() {
                chart
                    .draw_series(LineSeries::new(supervised, color.stroke_width(1)).point_size(3))
                    .map_err(plot_err)?
                    .label(format!("{} eval, supervised", c.name))
                    .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
            }
            let heldout = points(|e| e.heldout_mean);
            if !heldout.is_empty() {
                chart
                    .draw_series(DashedLineSeries::new(heldout, 6, 4, color.stroke_width(1)))
                    .map_err(plot_err)?
                    .label(format!("{} eval, held-out", c.name))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 6, y)], color.stroke_width(1))
                    });
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Anchors of viridis (matplotlib's colour-blind-safe, perceptually uniform scale), 0 to 1.
const VIRIDIS: [(u8, u8, u8); 5] = [
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
];
/// A diverging scale that colour-blind readers tell apart: blue (−1), white (0), orange (+1)
/// (ColorBrewer's PuOr ends).
const DIVERGING: [(u8, u8, u8); 3] = [(33, 102, 172), (247, 247, 247), (230, 97, 1)];

/// The colour at `t` in [0, 1] along evenly spaced `anchors`.
fn scale_color(anchors: &[(u8, u8, u8)], t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (anchors.len() - 1) as f64;
    let i = (pos.floor() as usize).min(anchors.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
    let (a, b) = (anchors[i], anchors[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The colour of a cell's value: viridis for a score in [0, 1], the diverging scale for a
/// difference in [−1, 1].
fn value_color(v: f64, difference: bool) -> RGBColor {
    if difference {
        scale_color(&DIVERGING, (v + 1.0) / 2.0)
    } else {
        scale_color(&VIRIDIS, v)
    }
}

/// Black or white, whichever reads better on `c`.
fn text_on(c: RGBColor) -> RGBColor {
    let luma = 0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2);
    if luma > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

/// `metric` (%) per cell as colored squares: rows languages, columns tasks, on viridis (0–100);
/// with `minus`, the difference on a blue (negative) – white – orange (positive) scale; a legend
/// bar under the grid. Cells without the metric (e.g. accuracy of a free-text task) are left out.
fn heatmap(r: &EvalResult, minus: Option<&EvalResult>, metric: Metric) -> Result<String> {
    let key = |c: &CellScore, t: &str| c.features.get(t).cloned().unwrap_or_default();
    let rows: Vec<String> = r
        .cells
        .iter()
        .map(|c| key(c, "lang"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cols: Vec<String> = r
        .cells
        .iter()
        .map(|c| key(c, "task"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let top = if metric == Metric::Auto { 44i32 } else { 30i32 };
    let (cell_w, cell_h, left) = (110i32, 34i32, 70i32);
    let width = (left + cell_w * cols.len() as i32 + 10) as u32;
    let legend_h = 44i32;
    let width = width.max((left + 320) as u32);
    let height = (top + cell_h * rows.len() as i32 + 10 + legend_h) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let text = TextStyle::from(("sans-serif", 14).into_font()).color(&BLACK);
        let small = TextStyle::from(("sans-serif", 11).into_font()).color(&BLACK);
        for (j, col) in cols.iter().enumerate() {
            let x = left + cell_w * j as i32 + 8;
            root.draw(&Text::new(col.clone(), (x, 8), text.clone()))
                .map_err(plot_err)?;
            // Under each task's own metric, the metric of the column under its name.
            if metric == Metric::Auto {
                let name = r
                    .cells
                    .iter()
                    .find(|c| &key(c, "task") == col)
                    .map_or("-", |c| c.own_metric().title());
                root.draw(&Text::new(name.to_string(), (x, 24), small.clone()))
                    .map_err(plot_err)?;
            }
        }
        for (i, row) in rows.iter().enumerate() {
            let y = top + cell_h * i as i32;
            root.draw(&Text::new(row.clone(), (8, y + 10), text.clone()))
                .map_err(plot_err)?;
            for (j, col) in cols.iter().enumerate() {
                let x = left + cell_w * j as i32;
                let Some(cell) = r
                    .cells
                    .iter()
                    .find(|c| &key(c, "lang") == row && &key(c, "task") == col)
                else {
                    continue;
                };
                let Some(mut v) = cell.value(metric) else {
                    continue;
                };
                if let Some(m) = minus {
                    let Some(other) = m
                        .cells
                        .iter()
                        .find(|c| c.cell == cell.cell)
                        .and_then(|c| c.value(metric))
                    else {
                        continue;
                    };
                    v -= other;
                }
                let color = value_color(v, minus.is_some());
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell_w - 2, y + cell_h - 2)],
                    color.filled(),
                ))
                .map_err(plot_err)?;
                let label = format!("{:.0} {}", 100.0 * v, kind_mark(cell.kind()));
                let ink = text_on(color);
                let on_cell = text.clone().color(&ink);
                root.draw(&Text::new(label, (x + 8, y + 10), on_cell))
                    .map_err(plot_err)?;
            }
        }
        // The legend: the scale as a bar of 50 steps, with its ends and middle labelled.
        let (bar_x, bar_y, bar_w) = (left, top + cell_h * rows.len() as i32 + 12, 300i32);
        let steps = 50;
        for k in 0..steps {
            let t = (f64::from(k) + 0.5) / f64::from(steps);
            let color = match minus {
                None => scale_color(&VIRIDIS, t),
                Some(_) => scale_color(&DIVERGING, t),
            };
            let x0 = bar_x + bar_w * k / steps;
            let x1 = bar_x + bar_w * (k + 1) / steps;
            root.draw(&Rectangle::new(
                [(x0, bar_y), (x1, bar_y + 12)],
                color.filled(),
            ))
            .map_err(plot_err)?;
        }
        let ends = match minus {
            None => ["0", "50", "100 (%)"],
            Some(_) => ["-100", "0", "+100 (points)"],
        };
        for (k, label) in ends.iter().enumerate() {
            let x = bar_x + bar_w * k as i32 / 2 - if k == 0 { 0 } else { 10 };
            root.draw(&Text::new(
                label.to_string(),
                (x, bar_y + 16),
                small.clone(),
            ))
            .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_run_from_end_to_end_and_text_stays_readable() {
        let rgb = |c: RGBColor| (c.0, c.1, c.2);
        assert_eq!(rgb(value_color(0.0, false)), VIRIDIS[0]);
        assert_eq!(rgb(value_color(1.0, false)), VIRIDIS[4]);
        assert_eq!(rgb(value_color(-1.0, true)), DIVERGING[0]);
        assert_eq!(rgb(value_color(0.0, true)), DIVERGING[1]);
        assert_eq!(rgb(value_color(1.0, true)), DIVERGING[2]);
        // Out of range and NaN are clamped, not wrapped.
        assert_eq!(rgb(value_color(7.0, false)), VIRIDIS[4]);
        assert_eq!(rgb(value_color(f64::NAN, false)), VIRIDIS[0]);
        assert_eq!(text_on(value_color(0.0, false)), WHITE);
        assert_eq!(text_on(value_color(1.0, false)), BLACK);
    }
}
