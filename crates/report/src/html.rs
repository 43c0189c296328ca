//! The report as one self-contained HTML file: inline CSS, inline SVG figures, and a small inline
//! script for the browser check. Nothing on the page loads anything from anywhere, so the file can
//! be mailed, archived or opened offline and looks the same.

use crate::browser;
use crate::format::html_escape as esc;
use crate::model::{Block, Cell, Report, Table};
use crate::svg;
use std::fmt::Write;

const STYLE: &str = r#"
*, *::before, *::after { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: #1f2328;
  font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Liberation Sans", "DejaVu Sans", Arial, sans-serif; }
main.report { max-width: 960px; margin: 32px auto; padding: 40px 48px 56px; background: #fff;
  border: 1px solid #e3e6ea; border-radius: 8px; }
h1 { font-size: 1.9rem; line-height: 1.25; margin: 0 0 .3rem; }
.subtitle { color: #57606a; margin: 0 0 1.5rem; font-size: 1.05rem; }
h2 { font-size: 1.35rem; line-height: 1.3; margin: 2.4rem 0 .9rem; padding-bottom: .3rem; border-bottom: 1px solid #e3e6ea; }
p { margin: .6rem 0 1rem; }
.table-wrap { overflow-x: auto; margin: 1rem 0 1.6rem; }
table { border-collapse: collapse; font-size: .92rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 .45rem; }
th, td { border: 1px solid #d8dee4; padding: .35rem .75rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure.figure { margin: 1.6rem 0; }
figure.figure svg { display: block; max-width: 100%; height: auto; }
figcaption { font-size: .9rem; color: #57606a; margin-top: .5rem; }
figcaption strong { color: #1f2328; }
pre.code { background: #f6f8fa; border: 1px solid #e3e6ea; border-radius: 6px; padding: .8rem 1rem; overflow-x: auto;
  font: 13px/1.5 ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; }
@media (max-width: 720px) { main.report { margin: 0; padding: 20px 16px; border: 0; border-radius: 0; } }
@media print { body { background: #fff; } main.report { margin: 0; border: 0; max-width: none; } }
"#;

pub fn render_html(report: &Report) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // `rel=icon` with an empty data: URL stops the browser asking for /favicon.ico.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main class=\"report\">\n<header>\n<h1>{}</h1>\n",
        esc(&report.title),
        esc(&report.title)
    );
    if !report.subtitle.is_empty() {
        let _ = writeln!(out, "<p class=\"subtitle\">{}</p>", esc(&report.subtitle));
    }
    out.push_str("</header>\n");
    for (i, section) in report.sections.iter().enumerate() {
        let _ = writeln!(
            out,
            "<section id=\"section-{}\">\n<h2>{}</h2>",
            i + 1,
            esc(&section.heading)
        );
        for block in &section.blocks {
            block_html(&mut out, block);
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n");
    out.push_str(&browser::probe_html());
    out.push_str("</body>\n</html>\n");
    out
}

fn block_html(out: &mut String, block: &Block) {
    match block {
        Block::Paragraph { text } => {
            // A blank line separates paragraphs, as in Markdown.
            for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
                let _ = writeln!(out, "<p>{}</p>", esc(para.trim()));
            }
        }
        Block::Table(table) => table_html(out, table),
        Block::LineChart(chart) => {
            let _ = writeln!(
                out,
                "<figure class=\"figure\" data-figure-id=\"{}\">\n{}\n<figcaption><strong>{}</strong></figcaption>\n</figure>",
                esc(&chart.id),
                svg::line_chart(chart),
                esc(&chart.title)
            );
        }
        Block::IntervalChart(chart) => {
            let _ = writeln!(
                out,
                "<figure class=\"figure\" data-figure-id=\"{}\">\n{}\n<figcaption><strong>{}</strong> Whiskers span each confidence interval.</figcaption>\n</figure>",
                esc(&chart.id),
                svg::interval_chart(chart),
                esc(&chart.title)
            );
        }
        Block::Code { language, text } => {
            let class = if language.is_empty() {
                String::new()
            } else {
                format!(" class=\"language-{}\"", esc(language))
            };
            let _ = writeln!(
                out,
                "<pre class=\"code\"><code{class}>{}</code></pre>",
                esc(text)
            );
        }
    }
}

fn table_html(out: &mut String, table: &Table) {
    let columns = table
        .rows
        .iter()
        .map(Vec::len)
        .chain([table.header.len()])
        .max()
        .unwrap_or(0);
    // A column whose every filled cell is a number is right-aligned, header included.
    let numeric: Vec<bool> = (0..columns)
        .map(|c| {
            let mut cells = table.rows.iter().filter_map(|r| r.get(c)).peekable();
            cells.peek().is_some() && cells.all(Cell::is_numeric)
        })
        .collect();
    let class = |c: usize| if numeric[c] { " class=\"num\"" } else { "" };
    out.push_str("<div class=\"table-wrap\">\n<table>\n");
    if let Some(caption) = &table.caption {
        let _ = writeln!(out, "<caption>{}</caption>", esc(caption));
    }
    if !table.header.is_empty() {
        out.push_str("<thead><tr>");
        for (c, h) in table.header.iter().enumerate() {
            let _ = write!(out, "<th{}>{}</th>", class(c), esc(h));
        }
        out.push_str("</tr></thead>\n");
    }
    out.push_str("<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(
                out,
                "<td{}>{}</td>",
                if cell.is_numeric() {
                    " class=\"num\""
                } else {
                    class(c)
                },
                esc(&cell.display())
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</div>\n");
}
