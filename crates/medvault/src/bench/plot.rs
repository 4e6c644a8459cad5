//! A small line chart as SVG text (throughput by data set size), written by `bench dataset`
//! and `bench all`; hand-written so the benchmarks need no plotting dependency.

use std::fmt::Write as _;

/// One line of the chart: a label, a CSS colour and its (x, y) points.
pub struct Series<'a> {
    pub label: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// The chart as a standalone SVG document; axes start at zero, the x axis ends at the
/// largest x (so a run's last point sits on the right edge), the y axis at a round number.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max);
    let x_max = if x_max > 0.0 && x_max.is_finite() {
        x_max
    } else {
        1.0
    };
    let y_max = nice(all.map(|p| p.1).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / x_max * plot_w;
    let sy = |y: f64| TOP + plot_h - y / y_max * plot_h;

    let mut svg = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let (x, y) = (x_max * i as f64 / 5.0, y_max * i as f64 / 5.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            sy(y),
            sy(y),
            LEFT - 6.0,
            sy(y) + 4.0,
            short(y)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            sx(x),
            TOP + plot_h + 18.0,
            short(x)
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="black"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="black"/>"#,
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    for (n, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.colour,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                svg,
                r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                s.colour
            );
        }
        let ly = TOP + 14.0 + 18.0 * n as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            WIDTH - RIGHT - 250.0,
            WIDTH - RIGHT - 226.0,
            s.colour,
            WIDTH - RIGHT - 220.0,
            ly + 4.0,
            escape(s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The next "round" number at or above `v` (1, 2 or 5 times a power of ten).
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    // Three significant digits at most: 400.064k is shown as 400k.
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    };
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_rounds_up_to_1_2_5() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(7.0), 10.0);
        assert_eq!(nice(13_000.0), 20_000.0);
        assert_eq!(nice(1_000_000.0), 1_000_000.0);
        assert_eq!(nice(1_000_001.0), 2_000_000.0);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(400_064.0), "400k");
        assert_eq!(short(2_500.0), "2.5k");
        assert_eq!(short(1_000_160.0), "1M");
        assert_eq!(short(12.0), "12");
    }

    #[test]
    fn chart_has_one_polyline_per_series_and_escapes_labels() {
        let svg = line_chart(
            "a <b>",
            "x",
            "y",
            &[
                Series {
                    label: "one & two",
                    colour: "red",
                    points: vec![(0.0, 1.0), (10.0, 5.0)],
                },
                Series {
                    label: "three",
                    colour: "blue",
                    points: vec![(10.0, 2.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg "));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;b&gt;") && svg.contains("one &amp; two"));
        // The highest point (10, 5) sits on the right edge and at the top of the plot area.
        assert!(svg.contains(r#"<circle cx="700.0" cy="50.0""#), "{svg}");
    }
}
