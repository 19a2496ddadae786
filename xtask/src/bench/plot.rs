//! The benchmark's charts, drawn by the bench itself as SVG into `docs/bench/` with plotters'
//! SVG backend (text becomes SVG `<text>`, so no font library is needed to build xtask, which
//! must compile before setup installs anything).
//!
//! - [`cdf`]: latency distributions, one line per series.
//! - [`bars`]: panels of bars (ratios), each with reference lines (goals, 1.0).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordusize;
use plotters::prelude::*;

/// Where the charts go: `docs/bench/`.
pub fn dir() -> PathBuf {
    crate::workspace_root().join("docs/bench")
}

/// One line of a CDF: `(value, percent)` points, percent rising from 0 to 100.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend.
    pub name: String,
    /// `(x, percent)`.
    pub points: Vec<(f64, f64)>,
}

/// A panel of bars.
#[derive(Debug, Clone)]
pub struct Panel {
    /// The caption.
    pub title: String,
    /// The y axis' description.
    pub y_label: String,
    /// `(label, value)`, drawn left to right.
    pub bars: Vec<(String, f64)>,
    /// A logarithmic y axis (for ratios spanning orders of magnitude).
    pub log: bool,
    /// Horizontal reference lines: `(value, legend)`.
    pub lines: Vec<(f64, String)>,
}

fn svg_error<E: std::fmt::Debug>(path: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing {}: {e:?}", path.display())
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Draws a CDF of every series into `path` (x: `x_label`, y: percent of samples at or below).
pub fn cdf(path: &Path, title: &str, x_label: &str, series: &[Series]) -> Result<()> {
    create_parent(path)?;
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.05;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_error(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..100.0)
        .map_err(svg_error(path))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("% of samples at or below")
        .draw()
        .map_err(svg_error(path))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = ShapeStyle::from(color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(svg_error(path))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(svg_error(path))?;
    root.present().map_err(svg_error(path))?;
    Ok(())
}

/// Draws `panels` one above the other into `path`.
pub fn bars(path: &Path, panels: &[Panel]) -> Result<()> {
    create_parent(path)?;
    let height = 320 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_error(path))?;
    for (panel, area) in panels.iter().zip(root.split_evenly((panels.len(), 1))) {
        draw_panel(&area, panel).map_err(svg_error(path))?;
    }
    root.present().map_err(svg_error(path))?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = panel.bars.len().max(1);
    let values = panel
        .bars
        .iter()
        .map(|b| b.1)
        .chain(panel.lines.iter().map(|l| l.0));
    let (lo, hi) = values.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let labels: Vec<String> = panel.bars.iter().map(|b| b.0.clone()).collect();
    let label_of = move |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60);
    // 0..n-1: a segmented range holds its end value as a segment too.
    let x_range = (0..(n - 1).max(1)).into_segmented();
    if panel.log {
        let lo = (lo.max(1e-6) / 2.0).max(1e-6);
        let mut chart = builder.build_cartesian_2d(x_range, (lo..hi * 2.0).log_scale())?;
        fill_panel(&mut chart, panel, lo, &label_of)
    } else {
        let mut chart = builder.build_cartesian_2d(x_range, 0.0..hi * 1.15)?;
        fill_panel(&mut chart, panel, 0.0, &label_of)
    }
}

/// The mesh, the bars from `base` up, the reference lines and their legend, on either y axis.
fn fill_panel<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<SegmentedCoord<RangedCoordusize>, Y>>,
    panel: &Panel,
    base: f64,
    label_of: &dyn Fn(&SegmentValue<usize>) -> String,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(panel.bars.len().max(1))
        .x_label_formatter(label_of)
        .y_desc(panel.y_label.as_str())
        .draw()?;
    chart.draw_series(panel.bars.iter().enumerate().map(|(i, (_, v))| {
        let mut r = Rectangle::new(
            [
                (SegmentValue::Exact(i), base),
                (SegmentValue::Exact(i + 1), *v),
            ],
            Palette99::pick(i).mix(0.8).filled(),
        );
        r.set_margin(0, 0, 12, 12);
        r
    }))?;
    for (k, (value, legend)) in panel.lines.iter().enumerate() {
        let style = ShapeStyle::from(Palette99::pick(20 + k).to_rgba()).stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                [
                    (SegmentValue::Exact(0), *value),
                    (SegmentValue::Last, *value),
                ],
                style,
            ))?
            .label(legend.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    if !panel.lines.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("corral-plot-{}-{name}", std::process::id()))
    }

    /// A CDF is an SVG with one path per series and the legend's names as text.
    #[test]
    fn cdf_draws_every_series() {
        let path = temp("cdf.svg");
        let series = vec![
            Series {
                name: "solo".into(),
                points: (1..=100)
                    .map(|p| (f64::from(p) * 0.1, f64::from(p)))
                    .collect(),
            },
            Series {
                name: "eevdf".into(),
                points: (1..=100)
                    .map(|p| (f64::from(p) * 0.2, f64::from(p)))
                    .collect(),
            },
        ];
        cdf(&path, "response time", "ms", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("solo") && svg.contains("eevdf"));
        assert!(svg.matches("<polyline").count() >= 2);
        std::fs::remove_file(&path).unwrap();
    }

    /// Bars draw one rectangle per bar with its label, on linear and logarithmic axes.
    #[test]
    fn bars_draw_labels_and_reference_lines() {
        let path = temp("bars.svg");
        let panels = vec![
            Panel {
                title: "p50 / solo".into(),
                y_label: "ratio".into(),
                bars: vec![("cpuset".into(), 1.0), ("corral".into(), 0.9)],
                log: false,
                lines: vec![(1.05, "goal 1.05".into())],
            },
            Panel {
                title: "host".into(),
                y_label: "ratio".into(),
                bars: vec![
                    ("cpuset / actor".into(), 442.0),
                    ("actor / direct".into(), 1.9),
                ],
                log: true,
                lines: vec![(500.0, "goal 500".into())],
            },
        ];
        bars(&path, &panels).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "cpuset",
            "corral",
            "goal 1.05",
            "cpuset / actor",
            "goal 500",
        ] {
            assert!(svg.contains(text), "no `{text}` in the SVG");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
