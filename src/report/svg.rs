//! The report's charts, as inline SVG: line charts over days or weeks, stacked columns, and
//! horizontal bars, each with a title, axes with ticks, the unit, and a legend.
//!
//! Written by hand, where `plotters`' SVG backend would also do: its charts are drawn shapes
//! and positioned text, and these need to be more of a document: an accessible `<title>` per
//! chart and per point or bar (the browser shows it on hover), CSS classes the page's print
//! style and its render check (`svg.chart`, `.series`) rely on, and text the browser lays out in
//! the page's own font. Three chart kinds in a few hundred lines, with no dependency.

use std::fmt::Write;

/// Colours for series, in order; readable on white and distinct in grey when printed.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f",
];

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 70.0;

/// One named series of values, one per x label.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" axis: ticks at 1, 2 or 5 times a power of ten, from 0 to at least `max`.
fn ticks(max: f64) -> (f64, Vec<f64>) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, vec![0.0, 1.0]);
    }
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let top = (max / step).ceil() * step;
    let n = (top / step).round() as usize;
    (top, (0..=n).map(|i| i as f64 * step).collect())
}

/// A tick's label: whole numbers with thousands separated, small ones with the decimals they need.
pub fn number(v: f64) -> String {
    if v.fract().abs() < 1e-9 && v.abs() < 1e15 {
        let n = v.round() as i64;
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn open(out: &mut String, id: &str, title: &str, height: f64) {
    let _ = write!(
        out,
        r#"<svg class="chart" id="{id}" role="img" aria-labelledby="{id}-t" viewBox="0 0 {WIDTH} {height}" width="100%" xmlns="http://www.w3.org/2000/svg"><title id="{id}-t">{t}</title><text class="ctitle" x="{LEFT}" y="20">{t}</text>"#,
        t = esc(title)
    );
}

/// The y axis with its grid, ticks and unit; returns the value's y position function's scale.
fn y_axis(out: &mut String, top: f64, ticks: &[f64], unit: &str, plot_h: f64) {
    for t in ticks {
        let y = TOP + plot_h - t / top * plot_h;
        let _ = write!(
            out,
            r##"<line class="grid" x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
            x2 = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = number(*t)
        );
    }
    let _ = write!(
        out,
        r#"<text class="unit" transform="translate(14,{cy:.1}) rotate(-90)" text-anchor="middle">{u}</text><line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{yb:.1}"/><line class="axis" x1="{LEFT}" x2="{xr}" y1="{yb:.1}" y2="{yb:.1}"/>"#,
        cy = TOP + plot_h / 2.0,
        u = esc(unit),
        yb = TOP + plot_h,
        xr = WIDTH - RIGHT,
    );
}

/// X labels under the plot: every one when few, else every k-th, turned when long.
fn x_labels(out: &mut String, labels: &[String], x: impl Fn(usize) -> f64, plot_h: f64) {
    let every = labels.len().div_ceil(16).max(1);
    for (i, l) in labels.iter().enumerate() {
        if i % every != 0 && i + 1 != labels.len() {
            continue;
        }
        let (px, py) = (x(i), TOP + plot_h + 14.0);
        let _ = write!(
            out,
            r#"<text class="tick" x="{px:.1}" y="{py:.1}" text-anchor="end" transform="rotate(-35 {px:.1} {py:.1})">{l}</text>"#,
            l = esc(l)
        );
    }
}

/// The legend, one swatch per series, on the chart's last line; then the chart is closed.
fn legend_and_close(out: &mut String, series: &[Series], y: f64) {
    let mut x = LEFT;
    for (i, n) in series.iter().map(|s| s.name.as_str()).enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{ry:.1}" width="10" height="10" fill="{colour}"/><text class="legend" x="{tx:.1}" y="{ty:.1}">{n}</text>"#,
            ry = y - 9.0,
            tx = x + 14.0,
            ty = y,
            n = esc(n)
        );
        x += 24.0 + 7.0 * n.chars().count() as f64;
    }
    out.push_str("</svg>");
}

/// The highest stack: the largest sum of the series' values at one label.
fn stacked_max(series: &[Series], labels: usize) -> f64 {
    (0..labels)
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
}

/// A line chart: one line per series over `labels` (days or weeks).
pub fn line_chart(
    id: &str,
    title: &str,
    labels: &[String],
    series: &[Series],
    unit: &str,
) -> String {
    let mut out = String::new();
    let height = HEIGHT + 24.0;
    open(&mut out, id, title, height);
    let plot_h = HEIGHT - TOP - BOTTOM + 24.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    let (top, tick_values) = ticks(max);
    y_axis(&mut out, top, &tick_values, unit, plot_h);
    let n = labels.len().max(1);
    let x = |i: usize| {
        if n == 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    x_labels(&mut out, labels, x, plot_h);
    for (k, s) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), TOP + plot_h - v / top * plot_h))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{p}"><title>{n}</title></polyline>"#,
            p = points.join(" "),
            n = esc(&s.name)
        );
        // Points as well as lines: a series of one day has no line to draw.
        for (i, v) in s.values.iter().enumerate() {
            let _ = write!(
                out,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="2.5" fill="{colour}"><title>{n} {l}: {v}</title></circle>"#,
                cx = x(i),
                cy = TOP + plot_h - v / top * plot_h,
                n = esc(&s.name),
                l = esc(labels.get(i).map_or("", String::as_str)),
                v = number(*v)
            );
        }
    }
    legend_and_close(&mut out, series, height - 8.0);
    out
}

/// Stacked columns: one column per label, one segment per series.
pub fn stacked_columns(
    id: &str,
    title: &str,
    labels: &[String],
    series: &[Series],
    unit: &str,
) -> String {
    let mut out = String::new();
    let height = HEIGHT + 24.0;
    open(&mut out, id, title, height);
    let plot_h = HEIGHT - TOP - BOTTOM + 24.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let (top, tick_values) = ticks(stacked_max(series, labels.len()));
    y_axis(&mut out, top, &tick_values, unit, plot_h);
    let n = labels.len().max(1);
    let slot = plot_w / n as f64;
    let bar = (slot * 0.8).max(1.0);
    let x = |i: usize| LEFT + slot * (i as f64 + 0.5);
    x_labels(&mut out, labels, x, plot_h);
    for (i, label) in labels.iter().enumerate() {
        let mut base = 0.0;
        for (k, s) in series.iter().enumerate() {
            let v = s.values.get(i).copied().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let y = TOP + plot_h - (base + v) / top * plot_h;
            let h = v / top * plot_h;
            let _ = write!(
                out,
                r#"<rect class="series" x="{bx:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{c}"><title>{n} {l}: {v}</title></rect>"#,
                bx = x(i) - bar / 2.0,
                c = PALETTE[k % PALETTE.len()],
                n = esc(&s.name),
                l = esc(label),
                v = number(v)
            );
            base += v;
        }
    }
    legend_and_close(&mut out, series, height - 8.0);
    out
}

/// Horizontal bars: one bar per label (top to bottom), one segment per series.
pub fn horizontal_bars(
    id: &str,
    title: &str,
    labels: &[String],
    series: &[Series],
    unit: &str,
) -> String {
    let mut out = String::new();
    let row = 22.0;
    let label_w = 300.0;
    let plot_h = row * labels.len().max(1) as f64;
    let height = TOP + plot_h + 56.0;
    open(&mut out, id, title, height);
    let x0 = label_w;
    let plot_w = WIDTH - x0 - RIGHT;
    let (top, tick_values) = ticks(stacked_max(series, labels.len()));
    for t in &tick_values {
        let x = x0 + t / top * plot_w;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{yb:.1}"/><text class="tick" x="{x:.1}" y="{ty:.1}" text-anchor="middle">{l}</text>"#,
            yb = TOP + plot_h,
            ty = TOP + plot_h + 14.0,
            l = number(*t)
        );
    }
    let _ = write!(
        out,
        r#"<text class="unit" x="{cx:.1}" y="{uy:.1}" text-anchor="middle">{u}</text><line class="axis" x1="{x0}" x2="{x0}" y1="{TOP}" y2="{yb:.1}"/>"#,
        cx = x0 + plot_w / 2.0,
        uy = TOP + plot_h + 30.0,
        u = esc(unit),
        yb = TOP + plot_h
    );
    for (i, l) in labels.iter().enumerate() {
        let y = TOP + row * i as f64;
        let shown: String = if l.chars().count() > 44 {
            l.chars().take(43).chain(['…']).collect()
        } else {
            l.clone()
        };
        let _ = write!(
            out,
            r#"<text class="tick" x="{lx:.1}" y="{ty:.1}" text-anchor="end">{s}<title>{full}</title></text>"#,
            lx = x0 - 6.0,
            ty = y + row * 0.65,
            s = esc(&shown),
            full = esc(l)
        );
        let mut base = 0.0;
        for (k, s) in series.iter().enumerate() {
            let v = s.values.get(i).copied().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let _ = write!(
                out,
                r#"<rect class="series" x="{bx:.1}" y="{by:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{n} {l}: {v}</title></rect>"#,
                bx = x0 + base / top * plot_w,
                by = y + 3.0,
                w = v / top * plot_w,
                h = row - 6.0,
                c = PALETTE[k % PALETTE.len()],
                n = esc(&s.name),
                l = esc(l),
                v = number(v)
            );
            base += v;
        }
    }
    legend_and_close(&mut out, series, height - 8.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            ticks(95.0),
            (100.0, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0])
        );
        assert_eq!(ticks(0.0).0, 1.0);
        let (top, t) = ticks(0.031);
        assert!(top >= 0.031 && t.len() <= 7, "{top} {t:?}");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(-1000.0), "-1,000");
    }

    #[test]
    fn text_is_escaped() {
        let svg = line_chart(
            "c",
            "<script>",
            &["a&b".into()],
            &[Series {
                name: "\"x\"".into(),
                values: vec![1.0],
            }],
            "n",
        );
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
        assert!(svg.contains("a&amp;b") && svg.contains("&quot;x&quot;"));
    }
}
