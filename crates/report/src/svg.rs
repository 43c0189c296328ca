//! Inline SVG for the two chart kinds. Every chart has explicit width, height and viewBox, so it
//! takes its space before any script runs and scales down with CSS on narrow screens.
//!
//! Text widths are estimated from character counts (no font metrics without a browser); the
//! estimates are generous so labels do not collide at the default 12px sans-serif.

use crate::format::{fixed, html_escape as esc, nice_ticks, tick_label, widen, Ticks};
use crate::model::{IntervalChart, LineChart};
use std::fmt::Write;

/// The report's text column at its widest (960px less padding), so charts fill it.
pub const WIDTH: f64 = 860.0;
const PLOT_HEIGHT: f64 = 280.0;
const TOP: f64 = 16.0;
const RIGHT: f64 = 24.0;
const FONT: f64 = 12.0;
/// Average advance of a 12px sans-serif character, rounded up.
const CHAR_W: f64 = 7.0;
const AXIS: &str = "#57606a";
const GRID: &str = "#e6e8eb";
const INK: &str = "#1f2328";

/// Colour-blind-friendly categorical palette (Tableau 10), in the order series appear.
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#ff9da7",
    "#9c755f", "#bab0ac",
];

fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * CHAR_W
}

/// Shortens `s` to `max` characters with an ellipsis; the full text stays in a `<title>` tooltip.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn open_svg(out: &mut String, width: f64, height: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" font-family="system-ui, -apple-system, 'Segoe UI', Roboto, 'Liberation Sans', 'DejaVu Sans', Arial, sans-serif" font-size="{FONT}" fill="{AXIS}"><title>{t}</title>"#,
        w = width,
        h = height,
        t = esc(title)
    );
}

/// Horizontal grid lines and labelled ticks of a y axis, plus its rotated label.
fn y_axis(
    out: &mut String,
    ticks: &Ticks,
    left: f64,
    plot_w: f64,
    sy: &dyn Fn(f64) -> f64,
    label: &str,
) {
    for &t in &ticks.values {
        let y = sy(t);
        let _ = write!(
            out,
            r#"<line x1="{left:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="{GRID}"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end">{l}</text>"#,
            x2 = left + plot_w,
            tx = left - 8.0,
            ty = y + 4.0,
            l = esc(&tick_label(t, ticks.decimals))
        );
    }
    if !label.is_empty() {
        // Beside the tick labels, even when rotated item labels pushed the axis further right.
        let x = (left - y_tick_width(ticks) - 22.0).max(14.0);
        let cy = TOP + PLOT_HEIGHT / 2.0;
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 {x:.1} {cy:.1})" fill="{INK}">{}</text>"#,
            esc(&truncate(label, 44))
        );
    }
}

fn y_tick_width(ticks: &Ticks) -> f64 {
    ticks
        .values
        .iter()
        .map(|&t| text_width(&tick_label(t, ticks.decimals)))
        .fold(0.0, f64::max)
}

fn no_data(out: &mut String, left: f64, plot_w: f64) {
    let _ = write!(
        out,
        r#"<rect x="{left:.1}" y="{TOP}" width="{plot_w:.1}" height="{PLOT_HEIGHT}" fill="none" stroke="{GRID}"/><text x="{x:.1}" y="{y:.1}" text-anchor="middle" font-size="14">no data</text>"#,
        x = left + plot_w / 2.0,
        y = TOP + PLOT_HEIGHT / 2.0
    );
}

/// One polyline per series over shared axes, with a legend underneath. Non-finite points are
/// skipped; a series with one point shows as a dot.
pub fn line_chart(chart: &LineChart) -> String {
    let finite: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let all = finite.iter().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let has_data = x0.is_finite();

    // Legend entries wrap into rows under the x axis label.
    let mut legend = Vec::new();
    let (mut lx, mut row) = (0.0, 0usize);
    let legend_w = WIDTH - 2.0 * RIGHT;
    for (i, s) in chart.series.iter().enumerate() {
        let name = truncate(&s.name, 40);
        let w = 22.0 + text_width(&name) + 18.0;
        if lx > 0.0 && lx + w > legend_w {
            lx = 0.0;
            row += 1;
        }
        legend.push((i, name, lx, row));
        lx += w;
    }
    let legend_rows = if legend.is_empty() { 0 } else { row + 1 };
    let x_axis_h = 48.0;
    let height = TOP + PLOT_HEIGHT + x_axis_h + legend_rows as f64 * 20.0 + 8.0;

    let mut out = String::new();
    open_svg(&mut out, WIDTH, height, &chart.title);
    if !has_data {
        let left = 64.0;
        no_data(&mut out, left, WIDTH - left - RIGHT);
    } else {
        let (x0, x1) = widen(x0, x1);
        let (y0, y1) = widen(y0, y1);
        let xt = nice_ticks(x0, x1, 6);
        let yt = nice_ticks(y0, y1, 5);
        let left = (y_tick_width(&yt) + 38.0).max(56.0);
        let plot_w = WIDTH - left - RIGHT;
        let sx = |x: f64| left + (x - xt.lo) / (xt.hi - xt.lo) * plot_w;
        let sy = |y: f64| TOP + PLOT_HEIGHT - (y - yt.lo) / (yt.hi - yt.lo) * PLOT_HEIGHT;
        y_axis(&mut out, &yt, left, plot_w, &sy, &chart.y_label);
        let base = TOP + PLOT_HEIGHT;
        let _ = write!(
            out,
            r#"<line x1="{left:.1}" y1="{base:.1}" x2="{x2:.1}" y2="{base:.1}" stroke="{AXIS}"/><line x1="{left:.1}" y1="{TOP}" x2="{left:.1}" y2="{base:.1}" stroke="{AXIS}"/>"#,
            x2 = left + plot_w
        );
        for &t in &xt.values {
            let x = sx(t);
            let _ = write!(
                out,
                r#"<line x1="{x:.1}" y1="{base:.1}" x2="{x:.1}" y2="{y2:.1}" stroke="{AXIS}"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle">{l}</text>"#,
                y2 = base + 5.0,
                ty = base + 19.0,
                l = esc(&tick_label(t, xt.decimals))
            );
        }
        for (i, points) in finite.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let name = esc(&chart.series[i].name);
            if points.len() > 1 {
                let coords: Vec<String> = points
                    .iter()
                    .map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y)))
                    .collect();
                let _ = write!(
                    out,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"><title>{name}</title></polyline>"#,
                    coords.join(" ")
                );
            }
            // Dots make short series readable; on long ones they would only clutter the line.
            if points.len() <= 24 {
                for &(x, y) in points {
                    let _ = write!(
                        out,
                        r#"<circle cx="{:.2}" cy="{:.2}" r="{}" fill="{color}"><title>{name}: x={}, y={}</title></circle>"#,
                        sx(x),
                        sy(y),
                        if points.len() == 1 { 4.0 } else { 2.5 },
                        esc(&crate::format::general(x)),
                        esc(&crate::format::general(y))
                    );
                }
            }
        }
    }
    if !chart.x_label.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{INK}">{}</text>"#,
            WIDTH / 2.0,
            TOP + PLOT_HEIGHT + 40.0,
            esc(&truncate(&chart.x_label, 80))
        );
    }
    let legend_top = TOP + PLOT_HEIGHT + x_axis_h + 6.0;
    for (i, name, x, row) in legend {
        let color = PALETTE[i % PALETTE.len()];
        let y = legend_top + row as f64 * 20.0;
        let x = RIGHT + x;
        let _ = write!(
            out,
            r#"<g><title>{full}</title><line x1="{x:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3" stroke-linecap="round"/><text x="{tx:.1}" y="{ty:.1}" fill="{INK}">{n}</text></g>"#,
            full = esc(&chart.series[i].name),
            x2 = x + 16.0,
            tx = x + 22.0,
            ty = y + 4.0,
            n = esc(&name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Decimals for the values of an interval chart (it has no `digits` of its own): three significant
/// digits of the largest value, the precision metrics are usually reported with (0.812, 55.1).
pub fn interval_digits(chart: &IntervalChart) -> usize {
    let largest = chart
        .items
        .iter()
        .map(|i| i.value.abs())
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(0.0, f64::max);
    if largest == 0.0 {
        return 3;
    }
    (2.0 - largest.log10().floor()).clamp(0.0, 6.0) as usize
}

/// The y axis of an interval chart and whether it starts at zero (then items are bars).
fn interval_axis(chart: &IntervalChart) -> Option<(Ticks, bool)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for it in &chart.items {
        for v in [it.value, it.low, it.high] {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if !lo.is_finite() {
        return None;
    }
    // Bars must start at zero to be honest, but when every value sits far from zero (0.81 vs 0.83)
    // a zero-based axis hides the differences; then the items are dots on a tighter axis.
    let zero =
        (lo <= 0.0 && hi >= 0.0) || (lo > 0.0 && lo < 0.5 * hi) || (hi < 0.0 && hi > 0.5 * lo);
    if zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let (lo, hi) = widen(lo, hi);
    let span = hi - lo;
    // Headroom above for the value labels; a margin below only where the axis is not at zero.
    let lo_pad = if zero && lo == 0.0 { 0.0 } else { span * 0.06 };
    let hi_pad = if zero && hi == 0.0 { 0.0 } else { span * 0.1 };
    Some((nice_ticks(lo - lo_pad, hi + hi_pad, 5), zero))
}

/// One bar (or dot) per item with a whisker from low to high and the value printed above.
pub fn interval_chart(chart: &IntervalChart) -> String {
    let n = chart.items.len().max(1);
    let axis = interval_axis(chart);
    let left = axis
        .as_ref()
        .map(|(t, _)| (y_tick_width(t) + 38.0).max(56.0))
        .unwrap_or(64.0);
    let longest = chart
        .items
        .iter()
        .map(|i| text_width(&truncate(&i.label, 28)))
        .fold(0.0, f64::max);
    let (sin, cos) = (35f64.to_radians().sin(), 35f64.to_radians().cos());
    // Labels wider than their slot turn by 35 degrees instead of overlapping their neighbours; they
    // then reach left of their item, so the first one may need a wider left margin.
    let rotate = longest > (WIDTH - left - RIGHT) / n as f64 - 6.0;
    let left = if rotate {
        left.max(longest * cos - (WIDTH - left - RIGHT) / n as f64 / 2.0 + 8.0)
    } else {
        left
    };
    let plot_w = WIDTH - left - RIGHT;
    let slot = plot_w / n as f64;
    let label_h = if rotate {
        longest * sin + FONT * cos + 16.0
    } else {
        28.0
    };
    let height = TOP + PLOT_HEIGHT + label_h + 8.0;

    let mut out = String::new();
    open_svg(&mut out, WIDTH, height, &chart.title);
    let Some((ticks, bars)) = axis else {
        no_data(&mut out, left, plot_w);
        out.push_str("</svg>");
        return out;
    };
    let digits = interval_digits(chart);
    let sy = |y: f64| TOP + PLOT_HEIGHT - (y - ticks.lo) / (ticks.hi - ticks.lo) * PLOT_HEIGHT;
    y_axis(&mut out, &ticks, left, plot_w, &sy, &chart.y_label);
    let base = TOP + PLOT_HEIGHT;
    let _ = write!(
        out,
        r#"<line x1="{left:.1}" y1="{TOP}" x2="{left:.1}" y2="{base:.1}" stroke="{AXIS}"/><line x1="{left:.1}" y1="{base:.1}" x2="{x2:.1}" y2="{base:.1}" stroke="{AXIS}"/>"#,
        x2 = left + plot_w
    );
    if bars && ticks.lo < 0.0 && ticks.hi > 0.0 {
        let z = sy(0.0);
        let _ = write!(
            out,
            r#"<line x1="{left:.1}" y1="{z:.1}" x2="{x2:.1}" y2="{z:.1}" stroke="{AXIS}"/>"#,
            x2 = left + plot_w
        );
    }
    let bar_w = (slot * 0.55).min(64.0);
    let cap = (bar_w * 0.4).clamp(8.0, 20.0);
    for (i, it) in chart.items.iter().enumerate() {
        let color = PALETTE[0];
        let cx = left + slot * (i as f64 + 0.5);
        let (lo, hi) = if it.low <= it.high {
            (it.low, it.high)
        } else {
            (it.high, it.low)
        };
        let tip = format!(
            "{}: {} [{}, {}]",
            it.label,
            fixed(it.value, digits),
            fixed(lo, digits),
            fixed(hi, digits)
        );
        let _ = write!(out, "<g><title>{}</title>", esc(&tip));
        let mut top = base;
        if it.value.is_finite() {
            let vy = sy(it.value);
            if bars {
                let zy = sy(0.0);
                let _ = write!(
                    out,
                    r#"<rect x="{:.1}" y="{:.1}" width="{bar_w:.1}" height="{:.1}" fill="{color}" fill-opacity="0.85" rx="2"/>"#,
                    cx - bar_w / 2.0,
                    vy.min(zy),
                    (vy - zy).abs()
                );
            } else {
                let _ = write!(
                    out,
                    r#"<circle cx="{cx:.1}" cy="{vy:.1}" r="5" fill="{color}"/>"#
                );
            }
            top = top.min(vy);
        }
        if lo.is_finite() && hi.is_finite() {
            let (ly, hy) = (sy(lo), sy(hi));
            let _ = write!(
                out,
                r##"<path d="M{cx:.1},{ly:.1}V{hy:.1}M{a:.1},{ly:.1}H{b:.1}M{a:.1},{hy:.1}H{b:.1}" stroke="{INK}" stroke-width="1.5" fill="none"/>"##,
                a = cx - cap / 2.0,
                b = cx + cap / 2.0
            );
            top = top.min(hy);
        }
        let _ = write!(
            out,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="{INK}" font-weight="600">{}</text>"#,
            top - 6.0,
            esc(&fixed(it.value, digits))
        );
        let label = esc(&truncate(&it.label, 28));
        if rotate {
            let ly = base + 14.0;
            let _ = write!(
                out,
                r#"<text x="{cx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-35 {cx:.1} {ly:.1})">{label}</text>"#
            );
        } else {
            let _ = write!(
                out,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                base + 19.0
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}
