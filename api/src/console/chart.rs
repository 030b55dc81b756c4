//! Bar charts drawn on the server as SVG: no script, no library, and they print. Colours are
//! SVG attributes (not inline CSS), which the console's content security policy allows.

use std::fmt::Write;

use maud::{Markup, html};

use crate::console::view;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
const TOP: f64 = 4.0;
const BOTTOM: f64 = 2.0;

/// One bar: its label (shown under the first and last bars and on hover) and its value.
pub struct Bar {
    pub label: String,
    pub value: f64,
}

/// A titled bar chart; `format` writes a value as the reader expects it (money, counts).
pub fn bars(title: &str, points: &[Bar], format: fn(f64) -> String) -> Markup {
    let max = points.iter().map(|p| p.value).fold(0.0_f64, f64::max);
    let total: f64 = points.iter().map(|p| p.value).sum();
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" preserveAspectRatio="none">"#,
        maud::html! { (title) }.into_string()
    );
    let plot = HEIGHT - TOP - BOTTOM;
    let _ = write!(
        svg,
        r##"<line x1="0" y1="{y}" x2="{WIDTH}" y2="{y}" stroke="#c9ced6" stroke-width="1"/>"##,
        y = TOP + plot
    );
    if !points.is_empty() {
        let slot = WIDTH / points.len() as f64;
        let width = (slot * 0.8).max(1.0);
        for (i, point) in points.iter().enumerate() {
            let height = if max > 0.0 {
                (point.value / max * plot).max(if point.value > 0.0 { 1.0 } else { 0.0 })
            } else {
                0.0
            };
            let x = i as f64 * slot + (slot - width) / 2.0;
            let tip = html! { (point.label) ": " (format(point.value)) }.into_string();
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{height:.1}" fill="#3d6fd6"><title>{tip}</title></rect>"##,
                y = TOP + plot - height
            );
        }
    }
    svg.push_str("</svg>");
    // Text lives outside the SVG, which stretches to the figure's width and would stretch it.
    html! {
        figure.chart {
            figcaption { (title) " " span.total { "(total " (format(total)) ", max " (format(max)) ")" } }
            (view::raw(svg))
            @if let (Some(first), Some(last)) = (points.first(), points.last()) {
                div.axis { span { (first.label) } span { (last.label) } }
            }
        }
    }
}

/// A count, as a chart label.
pub fn count(value: f64) -> String {
    view::count(value.round() as i64)
}

/// Micro-dollars, as a chart label.
pub fn usd(value: f64) -> String {
    view::usd(value.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_bars_scale_to_the_largest() {
        let points = [
            Bar {
                label: "<b>".into(),
                value: 5.0,
            },
            Bar {
                label: "z".into(),
                value: 10.0,
            },
        ];
        let svg = bars("calls & <more>", &points, count).into_string();
        assert!(svg.contains("&lt;b&gt;: 5"));
        assert!(svg.contains("calls &amp; &lt;more&gt;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains(r#"height="114.0""#), "{svg}");
        assert!(svg.contains(r#"height="57.0""#), "{svg}");
    }
}
