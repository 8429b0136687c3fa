//! A line chart as inline SVG, for the growth of live bytes over a series of dumps (the HTML
//! report and `tally leaks --html`). No script, no external resource: every point has a
//! `<title>` tooltip, every line a legend entry.

use std::fmt::Write as _;

use crate::render::xml::escape;

/// One line of the chart.
pub struct Line {
    /// The legend text.
    pub name: String,
    /// (x, y) points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// Axis texts.
pub struct Axes<'a> {
    /// Under the x axis.
    pub x_label: &'a str,
    /// Beside the y axis.
    pub y_label: &'a str,
    /// How x values print.
    pub x_format: &'a dyn Fn(f64) -> String,
    /// How y values print.
    pub y_format: &'a dyn Fn(f64) -> String,
}

const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf",
];
const WIDTH: f64 = 900.0;
const PLOT_HEIGHT: f64 = 320.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;

/// The chart as an `<svg>` element.
pub fn svg(lines: &[Line], axes: &Axes) -> String {
    let points = || lines.iter().flat_map(|line| line.points.iter());
    let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y_min, mut y_max) = (0.0f64, f64::NEG_INFINITY);
    for &(x, y) in points() {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !x_min.is_finite() {
        (x_min, x_max, y_max) = (0.0, 1.0, 1.0);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    if y_max <= y_min {
        y_max = y_min + 1.0;
    }
    let legend_height = 18.0 * lines.len() as f64 + 10.0;
    let height = TOP + PLOT_HEIGHT + 50.0 + legend_height;
    let plot_width = WIDTH - LEFT - RIGHT;
    let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_width;
    let py = |y: f64| TOP + PLOT_HEIGHT - (y - y_min) / (y_max - y_min) * PLOT_HEIGHT;

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    // Grid and y ticks.
    for i in 0..=4 {
        let y = y_min + (y_max - y_min) * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_width,
            py(y),
            py(y),
            LEFT - 6.0,
            py(y) + 4.0,
            escape(&(axes.y_format)(y))
        );
    }
    let mut last_label = String::new();
    for i in 0..=4 {
        let x = x_min + (x_max - x_min) * f64::from(i) / 4.0;
        let label = (axes.x_format)(x);
        if label == last_label {
            continue;
        }
        last_label.clone_from(&label);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            px(x),
            TOP + PLOT_HEIGHT + 18.0,
            escape(&label)
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#000\"/>\
         <line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">{}</text>",
        TOP + PLOT_HEIGHT,
        LEFT + plot_width,
        TOP + PLOT_HEIGHT,
        TOP + PLOT_HEIGHT,
        LEFT + plot_width / 2.0,
        TOP + PLOT_HEIGHT + 36.0,
        escape(axes.x_label),
        TOP + PLOT_HEIGHT / 2.0,
        TOP + PLOT_HEIGHT / 2.0,
        escape(axes.y_label),
    );
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
            path.join(" "),
            escape(&line.name)
        );
        for &(x, y) in &line.points {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{}: {} at {}</title></circle>",
                px(x),
                py(y),
                escape(&line.name),
                escape(&(axes.y_format)(y)),
                escape(&(axes.x_format)(x))
            );
        }
        let legend_y = TOP + PLOT_HEIGHT + 56.0 + 18.0 * i as f64;
        let _ = write!(
            s,
            "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            legend_y - 10.0,
            LEFT + 18.0,
            legend_y,
            escape(&line.name)
        );
    }
    s.push_str("</svg>");
    s
}
