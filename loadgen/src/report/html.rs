//! The `--html FILE` report: one self-contained page (inline CSS and SVG, no script, no
//! external resource) with the summary, the percentile table, and plots of latency
//! percentiles, throughput, and RTP loss and jitter over time.

use std::fmt::Write;

use super::{text, Report};
use crate::metrics::{Counter, Quantity};

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 40.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// One line of a plot: a value per second, `None` for a second without data (a gap).
pub struct Line {
    /// Legend text.
    pub name: String,
    /// Value of second `i` at index `i`.
    pub values: Vec<Option<f64>>,
}

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten) and the number of
/// grid steps that divides it into round values.
fn nice_max(v: f64) -> (f64, u32) {
    if v <= 0.0 || !v.is_finite() {
        return (1.0, 5);
    }
    let p = 10f64.powf(v.log10().floor());
    for (m, steps) in [(1.0, 5), (2.0, 4), (5.0, 5)] {
        if m * p >= v {
            return (m * p, steps);
        }
    }
    (10.0 * p, 5)
}

/// A line plot over the run's seconds as an inline `<svg>` element.
pub fn svg_plot(title: &str, unit: &str, lines: &[Line]) -> String {
    let n = lines.iter().map(|l| l.values.len()).max().unwrap_or(0);
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let (ymax, steps) = nice_max(max);
    let xmax = (n.max(2) - 1) as f64;
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| LEFT + pw * i as f64 / xmax;
    let y = |v: f64| TOP + ph * (1.0 - v / ymax);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}">"#,
        t = escape(title)
    );
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="18" class="title">{}</text>"#,
        escape(title)
    );
    // Axes, grid and labels.
    for k in 0..=steps {
        let v = ymax * f64::from(k) / f64::from(steps);
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            fmt_tick(v, ymax / f64::from(steps))
        );
    }
    let step = (n / 10).max(1);
    for i in (0..n.max(1)).step_by(step) {
        let xx = x(i);
        let _ = write!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle" class="tick">{i}</text>"#,
            HEIGHT - BOTTOM + 16.0
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/>"##,
        TOP + ph,
        WIDTH - RIGHT,
        TOP + ph,
        TOP + ph
    );
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="tick">second of the run</text><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle" class="tick">{}</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 6.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(unit)
    );
    // The lines: a path restarted after each gap; single points get a dot.
    for (k, line) in lines.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let mut d = String::new();
        let mut pen_down = false;
        for (i, v) in line.values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(i),
                        y(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
                d.trim_end()
            );
        }
        if line.values.iter().flatten().count() == 1 {
            if let Some((i, v)) = line
                .values
                .iter()
                .enumerate()
                .find_map(|(i, v)| v.map(|v| (i, v)))
            {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    x(i),
                    y(v)
                );
            }
        }
        let lx = LEFT + 130.0 * k as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}" class="tick">{}</text>"#,
            TOP - 16.0,
            lx + 18.0,
            TOP - 11.0,
            escape(&line.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// A tick label with as many decimals as the grid step needs.
fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// The percentile lines (p50, p99, in ms) of a quantity (the max is in the table: its spikes
/// would flatten the percentiles).
fn latency_lines(r: &Report, q: Quantity) -> Vec<Line> {
    let pts = r.data.recorder.series(q);
    let col = |f: fn(&crate::metrics::Point) -> u64| -> Vec<Option<f64>> {
        pts.iter()
            .map(|p| (p.count > 0).then(|| f(p) as f64 / 1000.0))
            .collect()
    };
    vec![
        Line {
            name: "p50".into(),
            values: col(|p| p.p50_us),
        },
        Line {
            name: "p99".into(),
            values: col(|p| p.p99_us),
        },
    ]
}

fn counter_line(r: &Report, c: Counter, name: &str) -> Line {
    Line {
        name: name.into(),
        values: r
            .data
            .recorder
            .counter_series()
            .iter()
            .map(|row| Some(row[c as usize] as f64))
            .collect(),
    }
}

/// The whole page.
pub fn page(r: &Report) -> String {
    let mut s = String::new();
    let title = format!("cpm-loadgen {} — {}", r.scenario(), r.target);
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
pre {{ background: #f6f6f6; padding: 1em; }}
svg {{ display: block; margin: 1em 0; }}
svg .title {{ font-size: 14px; font-weight: bold; }}
svg .tick {{ font-size: 11px; fill: #444; }}
.fail {{ color: #b00; font-weight: bold; }}
.pass {{ color: #070; font-weight: bold; }}
</style></head><body>
<h1>{t}</h1>
"#,
        t = escape(&title)
    );
    let v = r.violations();
    if v.is_empty() {
        s.push_str("<p class=\"pass\">Thresholds met.</p>\n");
    } else {
        let _ = writeln!(
            s,
            "<p class=\"fail\">Thresholds not met: {}</p>",
            escape(&v.join("; "))
        );
    }
    let _ = writeln!(s, "<pre>{}</pre>", escape(&text::summary(r)));
    if let Some(c) = super::ConferenceSummary::of(r) {
        s.push_str("<h2>Conference</h2>\n<table>\n");
        for line in c.lines() {
            let (k, v) = line.split_once(": ").unwrap_or((&line, ""));
            let _ = writeln!(s, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
        }
        s.push_str("</table>\n");
    }
    // Percentile table.
    s.push_str("<h2>Latency</h2>\n<table><tr><th>quantity</th><th>count</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>\n");
    for q in r.data.recorder.quantities() {
        if let Some(st) = r.stats(q) {
            let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&q.name()),
                st.count,
                ms(st.p50_us),
                ms(st.p90_us),
                ms(st.p99_us),
                ms(st.p999_us),
                ms(st.max_us)
            );
        }
    }
    s.push_str("</table>\n");
    for q in r.data.recorder.quantities() {
        if matches!(q, Quantity::RtpOwd | Quantity::RtpJitter) {
            continue;
        }
        s.push_str(&svg_plot(
            &format!("{} percentiles per second", q.name()),
            "ms",
            &latency_lines(r, q),
        ));
        s.push('\n');
    }
    s.push_str("<h2>Throughput</h2>\n");
    s.push_str(&svg_plot(
        "sessions per second",
        "per second",
        &[
            counter_line(r, Counter::Started, "started"),
            counter_line(r, Counter::Succeeded, "succeeded"),
            counter_line(r, Counter::Failed, "failed"),
        ],
    ));
    s.push_str("\n<h2>RTP loss and jitter</h2>\n");
    if r.rtp().is_some() {
        s.push_str(&svg_plot(
            "RTP packets per second",
            "packets",
            &[
                counter_line(r, Counter::RtpReceived, "received"),
                counter_line(r, Counter::RtpLost, "lost"),
                counter_line(r, Counter::RtpDuplicates, "duplicates"),
                counter_line(r, Counter::RtpReordered, "reordered"),
            ],
        ));
        for (q, label) in [
            (Quantity::RtpJitter, "interarrival jitter per second"),
            (Quantity::RtpOwd, "one-way delay per second"),
        ] {
            if r.stats(q).is_some() {
                s.push_str(&svg_plot(label, "ms", &latency_lines(r, q)));
            }
        }
    } else {
        s.push_str("<p>No RTP in this run.</p>\n");
    }
    s.push_str("</body></html>\n");
    s
}

/// Writes the HTML report to `path`.
pub fn write(r: &Report, path: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(path, page(r))
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn page_is_self_contained_with_plots() {
        let p = page(&sample(true));
        assert!(p.starts_with("<!DOCTYPE html>"));
        assert!(p.ends_with("</html>\n"));
        // No external resource of any kind.
        for bad in ["src=", "href=", "<script", "@import", "url("] {
            assert!(!p.contains(bad), "{bad}");
        }
        // Latency, throughput, RTP packets, jitter and delay plots.
        assert_eq!(p.matches("<svg").count(), 5, "{p}");
        assert!(p.contains("request_options percentiles per second"));
        assert!(p.contains("RTP packets per second"));
        let no_rtp = page(&sample(false));
        assert!(no_rtp.contains("No RTP in this run."));
        assert_eq!(no_rtp.matches("<svg").count(), 2);
    }

    #[test]
    fn plot_gaps_restart_the_path() {
        let svg = svg_plot(
            "t",
            "ms",
            &[Line {
                name: "a<b".into(),
                values: vec![Some(1.0), Some(2.0), None, Some(3.0)],
            }],
        );
        let d = svg.split("<path d=\"").nth(1).unwrap();
        let d = &d[..d.find('"').unwrap()];
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
        assert!(svg.contains("a&lt;b"));
    }

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(0.0), (1.0, 5));
        assert_eq!(nice_max(7.0), (10.0, 5));
        assert_eq!(nice_max(1.5), (2.0, 4));
        assert_eq!(nice_max(420.0), (500.0, 5));
        assert_eq!(nice_max(1000.0), (1000.0, 5));
        assert_eq!(fmt_tick(0.4, 0.2), "0.4");
        assert_eq!(fmt_tick(1.5, 0.5), "1.5");
        assert_eq!(fmt_tick(400.0, 100.0), "400");
        assert_eq!(fmt_tick(0.002, 0.002), "0.002");
    }
}
