//! Human-readable experiment reports: one self-contained HTML file with inline SVG figures
//! ([`render_html`]), the same content as GitHub Markdown ([`render_markdown`]), both written next to
//! the report's JSON by [`write_report`]; and [`browser`], which opens a rendered page in headless
//! Chromium to prove every figure has a size and nothing is fetched from the network.
//!
//! No tch here: reports are text, so anything (the CLI, xtask, a notebook exporter) can make one.

mod atomic;
pub mod browser;
mod error;
mod format;
mod html;
mod markdown;
mod model;
mod svg;

pub use browser::{BrowserCheck, FigureSize};
pub use error::{ReportError, Result};
pub use html::render_html;
pub use markdown::render_markdown;
pub use model::{Block, Cell, Interval, IntervalChart, LineChart, Report, Section, Series, Table};

use std::path::Path;

/// Writes `report.html`, `report.md` and `report.json` (pretty) into `dir`, creating it; each file
/// is replaced atomically, so a reader never sees a half-written report.
pub fn write_report(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))?;
    let json = serde_json::to_string_pretty(report)?;
    atomic::write(&dir.join("report.html"), render_html(report).as_bytes())?;
    atomic::write(&dir.join("report.md"), render_markdown(report).as_bytes())?;
    atomic::write(&dir.join("report.json"), json.as_bytes())?;
    Ok(())
}
