//! Number formatting and escaping shared by the HTML, SVG and Markdown renderers, so a value reads
//! the same in every output.

/// `value` with `digits` decimals. Non-finite values get words rather than Rust's `NaN`/`inf`, and a
/// value that rounds to zero never shows as `-0.000`.
pub fn fixed(value: f64, digits: usize) -> String {
    if value.is_nan() {
        return "n/a".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let s = format!("{value:.digits$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// A compact form for values whose precision nobody chose (chart summaries, axis positions):
/// integers as integers, other values with up to four decimals, very large or small ones in
/// scientific notation.
pub fn general(value: f64) -> String {
    if !value.is_finite() {
        return fixed(value, 0);
    }
    let a = value.abs();
    if a != 0.0 && !(1e-4..1e9).contains(&a) {
        return format!("{value:.3e}");
    }
    if value.fract() == 0.0 {
        return fixed(value, 0);
    }
    trim_zeros(fixed(value, 4))
}

fn trim_zeros(s: String) -> String {
    if !s.contains('.') {
        return s;
    }
    let t = s.trim_end_matches('0').trim_end_matches('.');
    if t == "-0" {
        "0".into()
    } else {
        t.to_string()
    }
}

/// Escapes text for HTML element content and quoted attribute values alike.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Axis ticks at 1, 2 or 5 times a power of ten: the axis runs from `lo` to `hi`, both on ticks, and
/// `decimals` is what a tick label needs to tell neighbours apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticks {
    pub lo: f64,
    pub hi: f64,
    pub values: Vec<f64>,
    pub decimals: usize,
}

/// Ticks covering `[min, max]` (finite, `min < max`), about `target` of them.
pub fn nice_ticks(min: f64, max: f64, target: usize) -> Ticks {
    debug_assert!(min.is_finite() && max.is_finite() && min < max);
    let raw = (max - min) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    // A small tolerance keeps float noise (0.30000000000000004) from adding an extra step.
    let eps = step * 1e-9;
    let first = ((min + eps) / step).floor();
    let last = ((max - eps) / step).ceil();
    let values: Vec<f64> = (0..=((last - first) as usize))
        .map(|i| snap((first + i as f64) * step, step))
        .collect();
    let decimals = (-step.log10().floor()).clamp(0.0, 12.0) as usize;
    Ticks {
        lo: values[0],
        hi: *values.last().expect("at least one tick"),
        values,
        decimals,
    }
}

/// Rounds away the float error of `k * step` so labels print cleanly.
fn snap(v: f64, step: f64) -> f64 {
    let scale = 10f64.powi((-step.log10().floor() as i32 + 2).max(0));
    let r = (v * scale).round() / scale;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// A tick label: large values in k/M so the y axis stays narrow.
pub fn tick_label(value: f64, decimals: usize) -> String {
    let a = value.abs();
    if a == 0.0 && decimals > 3 {
        // The other ticks of such an axis print as 5e-6, 1e-5: a bare zero matches them.
        "0".into()
    } else if a >= 1e9 || (a != 0.0 && a < 1e-3) {
        // Ticks are already rounded to one or two significant digits, so `{:e}` prints them short (5e-6).
        format!("{value:e}")
    } else if a >= 1e6 {
        format!("{}M", trim_zeros(fixed(value / 1e6, 2)))
    } else if a >= 1e4 {
        format!("{}k", trim_zeros(fixed(value / 1e3, 2)))
    } else {
        fixed(value, decimals)
    }
}

/// Makes a flat or single-valued range drawable: widen it around its value.
pub fn widen(min: f64, max: f64) -> (f64, f64) {
    if max > min {
        return (min, max);
    }
    let pad = if min == 0.0 { 1.0 } else { min.abs() * 0.1 };
    (min - pad, max + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rounds_and_never_shows_negative_zero() {
        assert_eq!(fixed(0.81234, 3), "0.812");
        assert_eq!(fixed(-0.0001, 3), "0.000");
        assert_eq!(fixed(f64::NAN, 3), "n/a");
        assert_eq!(fixed(-2.5, 1), "-2.5");
    }

    #[test]
    fn general_is_compact() {
        assert_eq!(general(1200.0), "1200");
        assert_eq!(general(0.81234), "0.8123");
        assert_eq!(general(0.5), "0.5");
        assert_eq!(general(1e-7), "1.000e-7");
    }

    #[test]
    fn ticks_cover_the_range_on_round_numbers() {
        let t = nice_ticks(0.76, 0.861, 5);
        assert!(t.lo <= 0.76 && t.hi >= 0.861, "{t:?}");
        assert_eq!(t.decimals, 2);
        assert!(t.values.len() >= 3 && t.values.len() <= 8, "{t:?}");
        let t = nice_ticks(0.0, 1000.0, 5);
        assert_eq!(t.values, vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        assert_eq!(t.decimals, 0);
    }

    #[test]
    fn escapes_all_five_characters() {
        assert_eq!(
            html_escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
