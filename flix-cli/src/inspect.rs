//! `flix inspect DATA.jsonl...`: reads a mixture and prints it as a grid, rows the values of the
//! first feature type, columns those of the second, each cell `examples/tokens` (tokens are
//! whitespace words of input + target: inspect reads no model, so it has no tokenizer), with
//! per-value totals on the margins and the grand total in the corner. A malformed line stops it
//! with its file:line.

use std::io::{ErrorKind, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_core::{read_jsonl, whitespace_tokens, Example, FeatureConfig, Registry, TypeDefaults};

use crate::text::{padded, Align};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// JSONL files, one example per line.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Feature types to read, comma separated; the first two span the grid.
    /// Default: `lang` then `task`, those the data has.
    #[arg(long, value_delimiter = ',', conflicts_with = "config")]
    types: Option<Vec<String>>,
    /// A feature config (JSON): its types are read and its value lists and grow policy are
    /// checked as training would.
    #[arg(long)]
    config: Option<PathBuf>,
}

const DEFAULT_TYPES: [&str; 2] = ["lang", "task"];

pub fn run(args: InspectArgs) -> Result<()> {
    let (names, config) = match (&args.types, &args.config) {
        (_, Some(path)) => {
            let config = FeatureConfig::load(path)?;
            (
                config.type_names().iter().map(|s| s.to_string()).collect(),
                Some(config),
            )
        }
        (Some(types), None) => (types.clone(), None),
        (None, None) => (DEFAULT_TYPES.iter().map(|s| s.to_string()).collect(), None),
    };
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut examples = Vec::new();
    for file in &args.files {
        let read = read_jsonl(file, &name_refs)?;
        if read.is_empty() {
            bail!(
                "{} holds no example: the file is empty (or only blank lines)",
                file.display()
            );
        }
        examples.extend(read);
    }

    let config = match config {
        Some(config) => config,
        None => {
            // By default keep only the types the data has; named types are kept even if absent.
            let present: Vec<&str> = if args.types.is_some() {
                name_refs.clone()
            } else {
                name_refs
                    .iter()
                    .copied()
                    .filter(|n| examples.iter().any(|e| e.features.contains_key(*n)))
                    .collect()
            };
            if present.is_empty() {
                bail!(
                    "the data has no {:?} or {:?} field; name its feature fields with --types",
                    DEFAULT_TYPES[0],
                    DEFAULT_TYPES[1]
                );
            }
            FeatureConfig::discovered(&present, TypeDefaults::default())
        }
    };
    let registry = Registry::discover(&config, &examples)?;

    let mut grid = Grid::new(&registry);
    for ex in &examples {
        let tokens = example_tokens(ex);
        let id_of = |k: usize| {
            let ft = &registry.types()[k];
            ex.features.get(ft.name()).and_then(|v| ft.id_of(v))
        };
        let row = id_of(0);
        let col = if registry.num_types() > 1 {
            id_of(1)
        } else {
            None
        };
        grid.add(row, col, tokens);
    }

    let total = grid.total();
    let mut report = format!(
        "{} file(s), {} examples, {} tokens (whitespace words of input + target)\n\n",
        args.files.len(),
        total.examples,
        total.tokens
    );
    report += &grid.render(&registry);
    report += "\ncell: examples/tokens; '-': no examples; (none): the example has no value\n";
    for ft in registry.types().iter().skip(2) {
        report += &format!("\n{}:\n", ft.name());
        for value in ft.values() {
            let mut count = Count::default();
            for ex in examples
                .iter()
                .filter(|e| e.features.get(ft.name()) == Some(value))
            {
                count.examples += 1;
                count.tokens += example_tokens(ex);
            }
            report += &format!("  {} {}\n", padded(value, 16, Align::Left), count.cell());
        }
    }
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(report.as_bytes()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// Whitespace words of input and target: the token count of a mixture read without a model.
fn example_tokens(ex: &Example) -> u64 {
    (whitespace_tokens(&ex.input) + whitespace_tokens(&ex.target)) as u64
}

#[derive(Clone, Copy, Default, Debug)]
struct Count {
    examples: u64,
    tokens: u64,
}

impl Count {
    fn add(&mut self, other: Count) {
        self.examples += other.examples;
        self.tokens += other.tokens;
    }
    fn cell(self) -> String {
        if self.examples == 0 {
            "-".into()
        } else {
            format!("{}/{}", self.examples, self.tokens)
        }
    }
}

/// Counts per (row value, column value); the last row and column hold examples without a value.
struct Grid {
    cells: Vec<Vec<Count>>,
}

impl Grid {
    fn new(registry: &Registry) -> Self {
        let rows = registry.types()[0].num_values() + 1;
        let cols = registry.types().get(1).map_or(0, |t| t.num_values()) + 1;
        Grid {
            cells: vec![vec![Count::default(); cols]; rows],
        }
    }

    fn add(&mut self, row: Option<i32>, col: Option<i32>, tokens: u64) {
        let last_row = self.cells.len() - 1;
        let r = row.map_or(last_row, |id| id as usize);
        let last_col = self.cells[r].len() - 1;
        let c = col.map_or(last_col, |id| id as usize);
        self.cells[r][c].add(Count {
            examples: 1,
            tokens,
        });
    }

    fn row_total(&self, r: usize) -> Count {
        let mut t = Count::default();
        self.cells[r].iter().for_each(|&c| t.add(c));
        t
    }

    fn col_total(&self, c: usize) -> Count {
        let mut t = Count::default();
        self.cells.iter().for_each(|row| t.add(row[c]));
        t
    }

    fn total(&self) -> Count {
        let mut t = Count::default();
        (0..self.cells.len()).for_each(|r| t.add(self.row_total(r)));
        t
    }

    /// The table as aligned text; the "(none)" row and column appear only when used.
    fn render(&self, registry: &Registry) -> String {
        let types = registry.types();
        let none = "(none)".to_string();
        let row_names: Vec<&String> = types[0].values().iter().chain([&none]).collect();
        let col_names: Vec<&String> = match types.get(1) {
            Some(t) => t.values().iter().chain([&none]).collect(),
            None => vec![],
        };
        let last_row = row_names.len() - 1;
        let rows: Vec<usize> = (0..row_names.len())
            .filter(|&r| r < last_row || self.row_total(r).examples > 0)
            .collect();
        let cols: Vec<usize> = (0..col_names.len())
            .filter(|&c| c + 1 < col_names.len() || self.col_total(c).examples > 0)
            .collect();

        let corner = match types.get(1) {
            Some(t) => format!("{}\\{}", types[0].name(), t.name()),
            None => types[0].name().to_string(),
        };
        let mut table: Vec<Vec<String>> = Vec::new();
        let mut header = vec![corner];
        header.extend(cols.iter().map(|&c| col_names[c].clone()));
        header.push("total".into());
        table.push(header);
        for &r in &rows {
            let mut line = vec![row_names[r].clone()];
            line.extend(cols.iter().map(|&c| self.cells[r][c].cell()));
            line.push(self.row_total(r).cell());
            table.push(line);
        }
        let mut footer = vec!["total".to_string()];
        footer.extend(cols.iter().map(|&c| self.col_total(c).cell()));
        footer.push(self.total().cell());
        table.push(footer);

        let widths: Vec<usize> = (0..table[0].len())
            .map(|i| {
                table
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in &table {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (s, &w))| {
                    let align = if i == 0 { Align::Left } else { Align::Right };
                    padded(s, w, align)
                })
                .collect();
            out += cells.join("  ").trim_end();
            out += "\n";
        }
        out
    }
}
