//! The report as GitHub Markdown: the same tables, charts summarized in words and numbers, for
//! reading in a terminal, a pull request or `runs/<name>/report.md`.

use crate::format::{fixed, general};
use crate::model::{Block, IntervalChart, LineChart, Report, Table};
use crate::svg::interval_digits;
use std::fmt::Write;

pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", one_line(&report.title));
    if !report.subtitle.is_empty() {
        let _ = writeln!(out, "_{}_\n", one_line(&report.subtitle));
    }
    for section in &report.sections {
        let _ = writeln!(out, "## {}\n", one_line(&section.heading));
        for block in &section.blocks {
            match block {
                Block::Paragraph { text } => {
                    let _ = writeln!(out, "{}\n", text.trim());
                }
                Block::Table(table) => table_md(&mut out, table),
                Block::LineChart(chart) => line_chart_md(&mut out, chart),
                Block::IntervalChart(chart) => interval_chart_md(&mut out, chart),
                Block::Code { language, text } => {
                    // The fence must be longer than any backtick run inside the code.
                    let longest = longest_run(text, '`');
                    let fence = "`".repeat(longest.max(2) + 1);
                    let _ = writeln!(
                        out,
                        "{fence}{language}\n{}\n{fence}\n",
                        text.trim_end_matches('\n')
                    );
                }
            }
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn longest_run(text: &str, ch: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == ch { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// Plain text for a heading, caption, label or cell: one line, since these end at a newline, and
/// `<` escaped so a name like `<dev>` is not taken for an HTML tag (and hidden) by GitHub.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('<', "\\<")
}

/// A table cell: one line, with `|` escaped so it does not split the cell.
fn cell_md(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

fn write_table(out: &mut String, header: &[String], rows: &[Vec<String>], right: &[bool]) {
    // GitHub needs a header row and the same number of cells on every row.
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0)
        .max(1);
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for c in 0..columns {
            let _ = write!(
                s,
                " {} |",
                cells.get(c).map(|t| cell_md(t)).unwrap_or_default()
            );
        }
        s
    };
    let _ = writeln!(out, "{}", line(header));
    let mut sep = String::from("|");
    for c in 0..columns {
        sep.push_str(if right.get(c).copied().unwrap_or(false) {
            " ---: |"
        } else {
            " --- |"
        });
    }
    let _ = writeln!(out, "{sep}");
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
    out.push('\n');
}

fn table_md(out: &mut String, table: &Table) {
    if let Some(caption) = &table.caption {
        let _ = writeln!(out, "**{}**\n", one_line(caption));
    }
    let rows: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|r| r.iter().map(|c| c.display()).collect())
        .collect();
    let columns = table.rows.iter().map(Vec::len).max().unwrap_or(0);
    let right: Vec<bool> = (0..columns)
        .map(|c| {
            let mut cells = table.rows.iter().filter_map(|r| r.get(c)).peekable();
            cells.peek().is_some() && cells.all(|cell| cell.is_numeric())
        })
        .collect();
    write_table(out, &table.header, &rows, &right);
}

fn line_chart_md(out: &mut String, chart: &LineChart) {
    let mut head = format!("**Figure: {}**", one_line(&chart.title));
    if !chart.x_label.is_empty() || !chart.y_label.is_empty() {
        let _ = write!(
            head,
            " ({} against {})",
            one_line(&chart.y_label),
            one_line(&chart.x_label)
        );
    }
    let _ = writeln!(out, "{head}\n");
    if chart.series.is_empty() {
        out.push_str("- no data\n\n");
        return;
    }
    for s in &chart.series {
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let name = one_line(&s.name);
        match points.last() {
            None => {
                let _ = writeln!(out, "- {name}: no data");
            }
            Some(&(lx, ly)) => {
                let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                let max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
                let _ = writeln!(
                    out,
                    "- {name}: {} point{}, last value at x={}: {}, min {}, max {}",
                    points.len(),
                    if points.len() == 1 { "" } else { "s" },
                    general(lx),
                    general(ly),
                    general(min),
                    general(max)
                );
            }
        }
    }
    out.push('\n');
}

fn interval_chart_md(out: &mut String, chart: &IntervalChart) {
    let mut head = format!("**Figure: {}**", one_line(&chart.title));
    if !chart.y_label.is_empty() {
        let _ = write!(head, " ({})", one_line(&chart.y_label));
    }
    let _ = writeln!(out, "{head}\n");
    let digits = interval_digits(chart);
    let rows: Vec<Vec<String>> = chart
        .items
        .iter()
        .map(|it| {
            let (lo, hi) = if it.low <= it.high {
                (it.low, it.high)
            } else {
                (it.high, it.low)
            };
            vec![
                it.label.clone(),
                fixed(it.value, digits),
                format!("[{}, {}]", fixed(lo, digits), fixed(hi, digits)),
            ]
        })
        .collect();
    write_table(
        out,
        &["label".into(), "value".into(), "95% CI".into()],
        &rows,
        &[false, true, true],
    );
}
