//! `flix report`: one self-contained HTML page with the loss curves of each run, a heatmap of
//! exact match per cell for each evaluated run, and a heatmap of the first run minus the second
//! (held-out cells marked with `*`). Plots are drawn with `plotters` into inline SVG.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use flix_model::eval::EvalResult;
use flix_model::train::StepReport;
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
    write_report(&args.out, &runs, &evals)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The metrics of a run directory, one report per step.
fn read_metrics(dir: &Path) -> Result<Vec<StepReport>> {
    let path = dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

/// Writes the page: loss curves of `runs` (name, directory), heatmaps of `evals`.
pub fn write_report(out: &Path, runs: &[(String, PathBuf)], evals: &[EvalResult]) -> Result<()> {
    let mut body = String::new();
    if !runs.is_empty() {
        let curves = runs
            .iter()
            .map(|(name, dir)| Ok((name.clone(), read_metrics(dir)?)))
            .collect::<Result<Vec<_>>>()?;
        body += "<h2>Training loss</h2>\n";
        body += &loss_plot(&curves)?;
    }
    for e in evals {
        body += &format!("<h2>Exact match: {}</h2>\n", html_escape(&e.name));
        body += &heatmap(e, None)?;
    }
    if let [a, b, ..] = evals {
        body += &format!(
            "<h2>{} minus {}</h2>\n",
            html_escape(&a.name),
            html_escape(&b.name)
        );
        body += &heatmap(a, Some(b))?;
    }
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>FLix report</title>\
         <style>body{{font-family:sans-serif;margin:2em}}</style></head><body>\n\
         <h1>FLix report</h1>\n<p>Held-out (zero-shot) cells are marked with *.</p>\n{body}\
         </body></html>\n"
    );
    std::fs::write(out, html).with_context(|| format!("writing {}", out.display()))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e:?}")
}

fn loss_plot(curves: &[(String, Vec<StepReport>)]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let max_step = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|r| r.step))
            .max()
            .unwrap_or(1) as f64;
        let max_loss = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|r| r.loss))
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
        for (i, (name, c)) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    c.iter().map(|r| (r.step as f64, r.loss)),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
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

/// Exact match (%) per cell as colored squares: rows languages, columns tasks; with `minus`, the
/// difference on a blue (negative) – white – red (positive) scale.
fn heatmap(r: &EvalResult, minus: Option<&EvalResult>) -> Result<String> {
    let key =
        |c: &flix_model::eval::CellScore, t: &str| c.features.get(t).cloned().unwrap_or_default();
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
    let (cell_w, cell_h, left, top) = (110i32, 34i32, 70i32, 30i32);
    let width = (left + cell_w * cols.len() as i32 + 10) as u32;
    let height = (top + cell_h * rows.len() as i32 + 10) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let text = TextStyle::from(("sans-serif", 14).into_font()).color(&BLACK);
        for (j, col) in cols.iter().enumerate() {
            root.draw(&Text::new(
                col.clone(),
                (left + cell_w * j as i32 + 8, 8),
                text.clone(),
            ))
            .map_err(plot_err)?;
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
                let mut v = cell.exact_match();
                if let Some(m) = minus {
                    let Some(other) = m.cells.iter().find(|c| c.cell == cell.cell) else {
                        continue;
                    };
                    v -= other.exact_match();
                }
                let color = match minus {
                    None => RGBColor(
                        (255.0 * (1.0 - v)) as u8,
                        (200.0 * v + 55.0 * (1.0 - v)) as u8,
                        (255.0 * (1.0 - v)) as u8,
                    ),
                    Some(_) if v >= 0.0 => {
                        RGBColor(255, (255.0 * (1.0 - v)) as u8, (255.0 * (1.0 - v)) as u8)
                    }
                    Some(_) => RGBColor((255.0 * (1.0 + v)) as u8, (255.0 * (1.0 + v)) as u8, 255),
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell_w - 2, y + cell_h - 2)],
                    color.filled(),
                ))
                .map_err(plot_err)?;
                let label = format!("{:.0}{}", 100.0 * v, if cell.heldout { " *" } else { "" });
                root.draw(&Text::new(label, (x + 8, y + 10), text.clone()))
                    .map_err(plot_err)?;
            }
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
