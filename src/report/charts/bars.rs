//! Horizontal bar charts: step-time breakdown and memory per GPU as stacked bars (one bar per
//! plan, labelled with the plan), and predicted against measured per operation class.

use super::{
    Drawn, Figure, Key, Ticked, label_style, tick_style, title_style, with_legend, zero_axis,
};
use crate::report::doc::sig;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Stacked horizontal bars: one per row, one segment per part.
#[derive(Clone, Debug, PartialEq)]
pub struct Stacked {
    /// Title.
    pub title: String,
    /// Axis description with its unit.
    pub unit: String,
    /// Part names and colours (the legend).
    pub parts: Vec<(String, RGBColor)>,
    /// Row label and one value per part.
    pub rows: Vec<(String, Vec<f64>)>,
    /// A vertical limit line (e.g. device memory) and its label.
    pub limit: Option<(f64, String)>,
    /// Suffix of the total printed after each bar, e.g. ` s`.
    pub total_suffix: String,
}

const WIDTH: u32 = 1200;
const ROW_PX: u32 = 40;

impl Stacked {
    /// Parts some row has a non-zero value for (the others would be empty legend entries).
    fn used_parts(&self) -> Vec<usize> {
        (0..self.parts.len())
            .filter(|&j| self.rows.iter().any(|r| r.1[j] > 0.0))
            .collect()
    }
}

/// The y axis of `n` rows: row i (from the top) at y = n − 1 − i.
fn row_y(n: usize, i: usize) -> f64 {
    (n - 1 - i) as f64
}

/// Width of the label area for `labels`, measured with the tick font.
fn label_width<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    labels: impl Iterator<Item = String>,
) -> Result<u32, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let mut w = 0;
    for l in labels {
        w = w.max(area.estimate_text_size(&l, &tick_style())?.0);
    }
    Ok(w + 16)
}

/// A chart with one row per label (top to bottom) and a value axis from 0 to `x1`, its
/// mesh drawn.
fn rows_chart<'a, DB: DrawingBackend>(
    plot: &'a DrawingArea<DB, Shift>,
    labels: &[String],
    x1: f64,
    unit: &str,
) -> Result<ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let n = labels.len().max(1);
    let (xaxis, decimals) = zero_axis(x1);
    let ys: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let lw = label_width(plot, labels.iter().cloned())?;
    let mut chart = ChartBuilder::on(plot)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(lw)
        .build_cartesian_2d(xaxis, Ticked::new(-0.6, n as f64 - 0.4, ys))?;
    let label_of = |y: &f64| {
        let i = n as i64 - 1 - y.round() as i64;
        labels.get(i.max(0) as usize).cloned().unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_label_formatter(&label_of)
        .x_label_formatter(&|x| format!("{x:.decimals$}"))
        .label_style(tick_style())
        .axis_desc_style(label_style())
        .bold_line_style(RGBColor(225, 225, 225))
        .max_light_lines(0)
        .draw()?;
    Ok(chart)
}

impl Figure for Stacked {
    fn size(&self) -> (u32, u32) {
        (WIDTH, 150 + ROW_PX * self.rows.len() as u32 + 40)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let root = root.titled(&self.title, title_style())?;
        let used = self.used_parts();
        let mut keys: Vec<Key> = used
            .iter()
            .map(|&j| Key::boxed(self.parts[j].0.clone(), self.parts[j].1))
            .collect();
        if let Some((_, l)) = &self.limit {
            keys.push(Key::line(l.clone(), RGBColor(200, 30, 30), true));
        }
        let plot = with_legend(&root, &keys)?;
        let n = self.rows.len().max(1);
        let totals: Vec<f64> = self.rows.iter().map(|r| r.1.iter().sum()).collect();
        let hi = totals
            .iter()
            .copied()
            .chain(self.limit.as_ref().map(|l| l.0))
            .fold(0.0, f64::max);
        let x1 = if hi > 0.0 { hi * 1.16 } else { 1.0 };
        let labels: Vec<String> = self.rows.iter().map(|r| r.0.clone()).collect();
        let mut chart = rows_chart(&plot, &labels, x1, &self.unit)?;
        for (i, (_, values)) in self.rows.iter().enumerate() {
            let y = row_y(n, i);
            let mut x = 0.0;
            for &j in &used {
                let v = values[j];
                if v > 0.0 {
                    let c = self.parts[j].1;
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x, y - 0.32), (x + v, y + 0.32)],
                        c.filled(),
                    )))?;
                }
                x += v;
            }
            let style = tick_style().pos(Pos::new(HPos::Left, VPos::Center));
            let text = format!("{}{}", sig(totals[i], 3), self.total_suffix);
            chart.draw_series(std::iter::once(Text::new(text, (x + x1 * 0.008, y), style)))?;
        }
        if let Some((cap, _)) = &self.limit {
            chart.draw_series(DashedLineSeries::new(
                vec![(*cap, -0.6), (*cap, n as f64 - 0.4)],
                5,
                4,
                RGBColor(200, 30, 30).stroke_width(2),
            ))?;
        }
        Ok(())
    }
}

/// Predicted against measured seconds per class, two bars per class.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyChart {
    /// Title.
    pub title: String,
    /// Class, predicted seconds, measured seconds (`None` where not measured).
    pub rows: Vec<(String, f64, Option<f64>)>,
}

impl Figure for VerifyChart {
    fn size(&self) -> (u32, u32) {
        (WIDTH, 150 + ROW_PX * self.rows.len() as u32 + 40)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let root = root.titled(&self.title, title_style())?;
        let (pc, mc) = (super::METHOD_COLORS[0], super::METHOD_COLORS[1]);
        let keys = [Key::boxed("predicted", pc), Key::boxed("measured", mc)];
        let plot = with_legend(&root, &keys)?;
        let n = self.rows.len().max(1);
        let hi = self
            .rows
            .iter()
            .map(|r| r.1.max(r.2.unwrap_or(0.0)))
            .fold(0.0, f64::max);
        let x1 = if hi > 0.0 { hi * 1.2 } else { 1.0 };
        let labels: Vec<String> = self.rows.iter().map(|r| r.0.clone()).collect();
        let mut chart = rows_chart(&plot, &labels, x1, "seconds per step")?;
        let style = tick_style().pos(Pos::new(HPos::Left, VPos::Center));
        for (i, (_, p, m)) in self.rows.iter().enumerate() {
            let y = row_y(n, i);
            let bars = [
                (p, pc, y + 0.02, y + 0.34),
                (&m.unwrap_or(0.0), mc, y - 0.34, y - 0.02),
            ];
            for (v, c, lo, hi) in bars {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(0.0, lo), (*v, hi)],
                    c.filled(),
                )))?;
            }
            let mtext = m.map_or("not measured".to_string(), |m| sig(m, 3));
            chart.draw_series([
                Text::new(sig(*p, 3), (p + x1 * 0.008, y + 0.18), style.clone()),
                Text::new(
                    mtext,
                    (m.unwrap_or(0.0) + x1 * 0.008, y - 0.18),
                    style.clone(),
                ),
            ])?;
        }
        Ok(())
    }
}
