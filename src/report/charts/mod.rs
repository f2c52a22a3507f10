//! Charts drawn once with plotters and rendered twice: PNG (bitmap, text rasterised with the
//! embedded DejaVu Sans, so it reads the same on a machine with no fonts) and SVG.

mod bars;
mod scaling;
mod timeline;

pub use bars::{Stacked, VerifyChart};
pub use scaling::{Line, ScalingChart, TrainingChart};
pub use timeline::TimelineChart;

use super::ReportError;
use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use std::error::Error;
use std::sync::OnceLock;

/// What a chart's drawing returns: any plotters error, boxed.
pub type Drawn = Result<(), Box<dyn Error>>;

/// A chart: its size in pixels and how to draw it on any plotters backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the chart on `root` (already white).
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static;
}

/// A chart rendered both ways.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// PNG file bytes.
    pub png: Vec<u8>,
    /// SVG document.
    pub svg: String,
}

/// The embedded font: DejaVu Sans 2.37 (Bitstream Vera licence, assets/fonts/).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font as plotters' `sans-serif` once per process.
fn register_font() -> Result<(), ReportError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| register_font_ab(FONT));
    if ok {
        Ok(())
    } else {
        Err(ReportError::Chart(
            "the embedded font assets/fonts/DejaVuSans.ttf is not a valid TrueType font".into(),
        ))
    }
}

fn register_font_ab(bytes: &'static [u8]) -> bool {
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
}

/// Renders `fig` to PNG bytes and an SVG document.
pub fn render(fig: &impl Figure) -> Result<Rendered, ReportError> {
    register_font()?;
    let (w, h) = fig.size();
    let chart = |e: Box<dyn Error>| ReportError::Chart(e.to_string());
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| chart(e.into()))?;
        fig.draw(&root).map_err(chart)?;
        root.present().map_err(|e| chart(e.into()))?;
    }
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Adaptive)
        .write_image(&buf, w, h, image::ColorType::Rgb8)
        .map_err(|e| ReportError::Chart(format!("PNG encoding: {e}")))?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| chart(e.into()))?;
        fig.draw(&root).map_err(chart)?;
        root.present().map_err(|e| chart(e.into()))?;
    }
    Ok(Rendered { png, svg })
}

/// Colours by role: the four methods, then the breakdown terms (colour-blind-safe Okabe–Ito
/// order, then greys).
pub const METHOD_COLORS: [RGBColor; 4] = [
    RGBColor(0, 114, 178),  // dp-only: blue
    RGBColor(230, 159, 0),  // tp-only: orange
    RGBColor(0, 158, 115),  // pp-only: green
    RGBColor(204, 51, 102), // hybrid: crimson
];

/// One colour per step-time term of `study::terms`, in that order.
pub const TERM_COLORS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // compute
    RGBColor(86, 180, 233),  // recompute
    RGBColor(230, 159, 0),   // TP comm
    RGBColor(0, 158, 115),   // PP comm
    RGBColor(213, 94, 0),    // DP comm
    RGBColor(204, 121, 167), // CP/EP comm
    RGBColor(170, 170, 170), // bubble
    RGBColor(120, 94, 60),   // optimizer
];

/// Text sizes in pixels.
pub const TITLE_PX: u32 = 19;
/// Axis labels and legend.
pub const LABEL_PX: u32 = 14;
/// Tick labels.
pub const TICK_PX: u32 = 13;

/// The text style of tick labels.
pub fn tick_style() -> TextStyle<'static> {
    ("sans-serif", TICK_PX).into_font().color(&BLACK)
}

/// The text style of axis descriptions and legends.
pub fn label_style() -> TextStyle<'static> {
    ("sans-serif", LABEL_PX).into_font().color(&BLACK)
}

/// The text style of titles.
pub fn title_style() -> TextStyle<'static> {
    ("sans-serif", TITLE_PX).into_font().color(&BLACK)
}

/// A legend item: a label and how its key looks.
pub struct Key {
    /// Label.
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// A line (with a dot) rather than a filled box.
    pub line: bool,
    /// Dashed line.
    pub dashed: bool,
    /// A wide pale band under the line (the best hybrid).
    pub wide: bool,
}

impl Key {
    /// A filled-box key.
    pub fn boxed(label: impl Into<String>, color: RGBColor) -> Key {
        Key {
            label: label.into(),
            color,
            line: false,
            dashed: false,
            wide: false,
        }
    }
    /// A line key.
    pub fn line(label: impl Into<String>, color: RGBColor, dashed: bool) -> Key {
        Key {
            label: label.into(),
            color,
            line: true,
            dashed,
            wide: false,
        }
    }
}

/// Where each key of a legend goes, and the strip's height.
type Layout = (Vec<(i32, i32)>, u32);

/// Where each key of a legend goes in a strip `width` pixels wide: (x, y) of each key and
/// the strip's height. Keys run left to right and wrap to a new row when one is full.
fn legend_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    keys: &[Key],
    width: u32,
) -> Result<Layout, Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let style = label_style();
    let (mut x, mut y) = (12i32, 6i32);
    let mut at = Vec::with_capacity(keys.len());
    for k in keys {
        let (tw, _) = area.estimate_text_size(&k.label, &style)?;
        let item = 30 + tw as i32 + 22;
        if x + item > width as i32 && x > 12 {
            x = 12;
            y += 22;
        }
        at.push((x, y));
        x += item;
    }
    Ok((at, y as u32 + 24))
}

/// Splits `root` into the plot above and a legend strip below (so the legend never covers
/// data), draws the legend, and returns the plot area.
pub fn with_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    keys: &[Key],
) -> Result<DrawingArea<DB, Shift>, Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let (w, h) = root.dim_in_pixel();
    let (at, height) = legend_layout(root, keys, w)?;
    let (plot, strip) = root.split_vertically(h - height);
    let style = label_style();
    for (k, &(x, y)) in keys.iter().zip(&at) {
        let c = k.color;
        if k.line && k.dashed {
            for s in [0, 10, 20] {
                strip.draw(&PathElement::new(
                    vec![(x + s, y + 8), (x + s + 6, y + 8)],
                    c.stroke_width(2),
                ))?;
            }
        } else if k.line {
            strip.draw(&PathElement::new(
                vec![(x, y + 8), (x + 24, y + 8)],
                c.stroke_width(2),
            ))?;
            strip.draw(&Circle::new((x + 12, y + 8), 4, c.filled()))?;
            if k.wide {
                strip.draw(&PathElement::new(
                    vec![(x, y + 8), (x + 24, y + 8)],
                    c.mix(0.45).stroke_width(9),
                ))?;
                strip.draw(&Circle::new((x + 12, y + 8), 7, c.filled()))?;
            }
        } else {
            strip.draw(&Rectangle::new(
                [(x + 4, y + 1), (x + 20, y + 15)],
                c.filled(),
            ))?;
        }
        strip.draw(&Text::new(k.label.clone(), (x + 30, y), style.clone()))?;
    }
    Ok(plot)
}

/// Label of a power-of-two axis position `x` (log2 of a count): the count, e.g. 512, 4096,
/// 16k for 16,384.
pub fn pow2_label(x: f64) -> String {
    let v = 2f64.powf(x).round();
    if v >= 16_384.0 {
        format!("{}k", (v / 1024.0).round())
    } else {
        format!("{v}")
    }
}

/// A linear f64 axis whose grid lines and labels sit exactly at `ticks` (plotters picks its
/// own round values otherwise; a GPU-count axis wants one tick per count studied).
#[derive(Clone, Debug, PartialEq)]
pub struct Ticked {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Tick positions.
    pub ticks: Vec<f64>,
}

impl Ticked {
    /// An axis over `lo..hi` with ticks at `ticks`.
    pub fn new(lo: f64, hi: f64, ticks: Vec<f64>) -> Ticked {
        Ticked { lo, hi, ticks }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// A round step (1, 2 or 5 × 10^k) at least `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// An axis from 0 to `hi` with about six round ticks, and the decimals its labels need.
pub fn zero_axis(hi: f64) -> (Ticked, usize) {
    let step = nice_step(hi / 6.0);
    let n = (hi / step).floor() as i32;
    let ticks = (0..=n).map(|i| f64::from(i) * step).collect();
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    (Ticked::new(0.0, hi, ticks), decimals)
}
