//! Line charts against the GPU count (log2 axis): speedup and scaling efficiency per method,
//! and time-to-train and GPU-hours (and cost) with the knee marked.

use super::{
    Drawn, Figure, Key, Ticked, label_style, nice_step, pow2_label, tick_style, title_style,
    with_legend,
};
use crate::report::doc::sig;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One method's line: (GPUs, value) for the counts where it has a plan, and the counts where
/// it has none (the line breaks there).
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// (GPUs, speedup, efficiency), `None` where the method has no feasible plan.
    pub points: Vec<(u64, Option<(f64, f64)>)>,
}

/// Speedup (log-log, with ideal) and scaling efficiency against the GPU count.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingChart {
    /// Title.
    pub title: String,
    /// One line per method.
    pub lines: Vec<Line>,
}

/// Time-to-train and GPU-hours (and cost) of the best plan per GPU count.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingChart {
    /// Title.
    pub title: String,
    /// (GPUs, days, GPU-hours) where a plan fits.
    pub points: Vec<(u64, f64, f64)>,
    /// The knee, with the threshold that defines it.
    pub knee: Option<(u64, f64)>,
    /// Price of a GPU-hour (adds a cost axis).
    pub price: Option<f64>,
}

/// Size of both charts.
const SIZE: (u32, u32) = (1200, 560);

type Axis = Ticked;

fn log2(n: u64) -> f64 {
    (n as f64).log2()
}

/// The GPU-count axis: log2 positions with a tick at every count.
fn gpu_axis(counts: &[u64]) -> Axis {
    let lo = counts.iter().copied().min().unwrap_or(1);
    let hi = counts.iter().copied().max().unwrap_or(1);
    let ticks: Vec<f64> = counts.iter().map(|&n| log2(n)).collect();
    Ticked::new(log2(lo) - 0.35, log2(hi) + 0.35, ticks)
}

/// Positions (log10) of 1-2-5 ticks between 10^lo and 10^hi; only powers of ten when those
/// would be too many.
fn log10_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut all = Vec::new();
    for k in (lo.floor() as i32 - 1)..=(hi.ceil() as i32 + 1) {
        for m in [1.0, 2.0, 5.0] {
            let x = (m * 10f64.powi(k)).log10();
            if x >= lo && x <= hi {
                all.push(x);
            }
        }
    }
    if all.len() > 10 {
        all.retain(|x| (x - x.round()).abs() < 1e-9);
    }
    all
}

/// A large count in a few characters: 950, 12.5k, 3.2M.
pub fn compact(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{}M", sig(x / 1e6, 3))
    } else if a >= 1e4 {
        format!("{}k", sig(x / 1e3, 3))
    } else {
        sig(x, 3)
    }
}

fn counts(lines: &[Line]) -> Vec<u64> {
    lines
        .first()
        .map(|l| l.points.iter().map(|p| p.0).collect())
        .unwrap_or_default()
}

/// Each unbroken run of a line's points, as plot coordinates via `f`.
fn runs(l: &Line, f: impl Fn(u64, (f64, f64)) -> (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(n, v) in &l.points {
        match v {
            Some(v) => out.last_mut().expect("one run").push(f(n, v)),
            None if !out.last().expect("one run").is_empty() => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

fn draw_lines<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<Axis, Axis>>,
    lines: &[Line],
    f: impl Fn(u64, (f64, f64)) -> (f64, f64) + Copy,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    // The best hybrid first, wide and pale, so a method that coincides with it (often
    // DP-only) stays visible on top of it.
    for (i, l) in lines.iter().enumerate().rev() {
        let wide = i == lines.len() - 1;
        for run in runs(l, f) {
            if wide {
                let band = l.color.mix(0.45).stroke_width(9);
                chart.draw_series(LineSeries::new(run.clone(), band))?;
                chart.draw_series(run.iter().map(|&p| Circle::new(p, 7, l.color.filled())))?;
            } else {
                chart.draw_series(LineSeries::new(run.clone(), l.color.stroke_width(2)))?;
                chart.draw_series(run.iter().map(|&p| Circle::new(p, 4, l.color.filled())))?;
            }
        }
    }
    Ok(())
}

impl ScalingChart {
    fn speedup<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let ns = counts(&self.lines);
        let values = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(|p| p.1.map(|v| v.0)));
        let (lo, hi) = values.fold((1.0f64, 1.0f64), |(a, b), v| (a.min(v), b.max(v)));
        let n_hi = ns.iter().copied().max().unwrap_or(1) as f64;
        let (y0, y1) = (lo.log2().floor() - 0.3, hi.max(n_hi).log2().ceil() + 0.3);
        let yticks: Vec<f64> = ((y0.ceil() as i32)..=(y1.floor() as i32))
            .map(f64::from)
            .collect();
        let mut chart = ChartBuilder::on(area)
            .caption("speedup over one GPU", label_style())
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(gpu_axis(&ns), Ticked::new(y0, y1, yticks))?;
        chart
            .configure_mesh()
            .x_desc("GPUs (log scale)")
            .y_desc("speedup (log scale)")
            .x_label_formatter(&|x| pow2_label(*x))
            .y_label_formatter(&|y| pow2_label(*y))
            .label_style(tick_style())
            .axis_desc_style(label_style())
            .bold_line_style(RGBColor(225, 225, 225))
            .max_light_lines(0)
            .draw()?;
        let ideal: Vec<(f64, f64)> = ns.iter().map(|&n| (log2(n), log2(n))).collect();
        chart.draw_series(DashedLineSeries::new(ideal, 6, 5, BLACK.stroke_width(1)))?;
        draw_lines(&mut chart, &self.lines, |n, v| (log2(n), v.0.log2()))
    }

    fn efficiency<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let ns = counts(&self.lines);
        let hi = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(|p| p.1.map(|v| v.1)))
            .fold(1.0f64, f64::max);
        let top = (hi * 1.08).max(1.08);
        let yticks: Vec<f64> = (0..=((top * 10.0) as i32))
            .map(|i| i as f64 / 10.0)
            .collect();
        let mut chart = ChartBuilder::on(area)
            .caption("scaling efficiency (speedup / GPUs)", label_style())
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(gpu_axis(&ns), Ticked::new(0.0, top, yticks))?;
        chart
            .configure_mesh()
            .x_desc("GPUs (log scale)")
            .y_desc("efficiency")
            .x_label_formatter(&|x| pow2_label(*x))
            .y_label_formatter(&|y| format!("{:.0}%", 100.0 * y))
            .label_style(tick_style())
            .axis_desc_style(label_style())
            .bold_line_style(RGBColor(225, 225, 225))
            .max_light_lines(0)
            .draw()?;
        let (x0, x1) = (log2(ns[0]) - 0.35, log2(*ns.last().expect("counts")) + 0.35);
        chart.draw_series(DashedLineSeries::new(
            vec![(x0, 1.0), (x1, 1.0)],
            6,
            5,
            BLACK.stroke_width(1),
        ))?;
        draw_lines(&mut chart, &self.lines, |n, v| (log2(n), v.1))
    }
}

impl Figure for ScalingChart {
    fn size(&self) -> (u32, u32) {
        SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let root = root.titled(&self.title, title_style())?;
        let mut keys: Vec<Key> = self
            .lines
            .iter()
            .map(|l| Key::line(l.label.clone(), l.color, false))
            .collect();
        if let Some(k) = keys.last_mut() {
            k.wide = true;
        }
        keys.push(Key::line("ideal (linear)", BLACK, true));
        let plot = with_legend(&root, &keys)?;
        let (left, right) = plot.split_horizontally(SIZE.0 / 2);
        self.speedup(&left)?;
        self.efficiency(&right)
    }
}

/// Draws the knee: a dashed vertical line across the panel and its label at the top.
fn knee_line<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<Axis, Axis>>,
    knee: (u64, f64),
    (y0, y1): (f64, f64),
    right_half: bool,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    let x = log2(knee.0);
    let red = RGBColor(200, 30, 30);
    chart.draw_series(DashedLineSeries::new(
        vec![(x, y0), (x, y1)],
        5,
        4,
        red.stroke_width(2),
    ))?;
    let (h, dx) = if right_half {
        (HPos::Right, -0.06)
    } else {
        (HPos::Left, 0.06)
    };
    let style = label_style().color(&red).pos(Pos::new(h, VPos::Top));
    chart.draw_series(std::iter::once(Text::new(
        format!("knee: {}", crate::units::fmt_gpus(knee.0)),
        (x + dx, y1),
        style,
    )))?;
    Ok(())
}

impl TrainingChart {
    fn right_half(&self, n: u64) -> bool {
        let ns: Vec<u64> = self.points.iter().map(|p| p.0).collect();
        let (lo, hi) = (log2(ns[0]), log2(*ns.last().expect("points")));
        log2(n) > (lo + hi) / 2.0
    }

    fn days<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let ns: Vec<u64> = self.points.iter().map(|p| p.0).collect();
        let ys: Vec<f64> = self.points.iter().map(|p| p.1.log10()).collect();
        let first = self.points[0];
        let ideal_last = first.1 * first.0 as f64 / *ns.last().expect("points") as f64;
        let lo = ys.iter().copied().fold(ideal_last.log10(), f64::min);
        let hi = ys.iter().copied().fold(f64::MIN, f64::max);
        let (y0, y1) = (lo - 0.15, hi + 0.25);
        let mut chart = ChartBuilder::on(area)
            .caption("time to train", label_style())
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(gpu_axis(&ns), Ticked::new(y0, y1, log10_ticks(y0, y1)))?;
        chart
            .configure_mesh()
            .x_desc("GPUs (log scale)")
            .y_desc("days (log scale)")
            .x_label_formatter(&|x| pow2_label(*x))
            .y_label_formatter(&|y| crate::report::doc::count(10f64.powf(*y)))
            .label_style(tick_style())
            .axis_desc_style(label_style())
            .bold_line_style(RGBColor(225, 225, 225))
            .max_light_lines(0)
            .draw()?;
        let ideal: Vec<(f64, f64)> = ns
            .iter()
            .map(|&n| (log2(n), (first.1 * first.0 as f64 / n as f64).log10()))
            .collect();
        chart.draw_series(DashedLineSeries::new(ideal, 6, 5, BLACK.stroke_width(1)))?;
        let pts: Vec<(f64, f64)> = ns.iter().zip(&ys).map(|(&n, &y)| (log2(n), y)).collect();
        let c = super::METHOD_COLORS[3];
        chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        if let Some(k) = self.knee {
            knee_line(&mut chart, k, (y0, y1), self.right_half(k.0))?;
        }
        Ok(())
    }

    fn gpu_hours<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let ns: Vec<u64> = self.points.iter().map(|p| p.0).collect();
        let top = self.points.iter().map(|p| p.2).fold(0.0, f64::max) * 1.18;
        let step = nice_step(top / 6.0);
        let ticks: Vec<f64> = (0..=((top / step) as i32))
            .map(|i| i as f64 * step)
            .collect();
        let x = gpu_axis(&ns);
        let x_range = x.range();
        let (caption, desc) = match self.price {
            Some(p) => (
                format!("GPU-hours and cost at ${p} per GPU-hour"),
                "GPU-hours (cost)",
            ),
            None => ("GPU-hours".to_string(), "GPU-hours"),
        };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, label_style())
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(if self.price.is_some() { 118 } else { 64 })
            .build_cartesian_2d(x, Ticked::new(0.0, top, ticks))?;
        let price = self.price;
        let ylabel = move |y: &f64| match price {
            Some(p) => format!("{} (${})", compact(*y), compact(y * p)),
            None => compact(*y),
        };
        chart
            .configure_mesh()
            .x_desc("GPUs (log scale)")
            .y_desc(desc)
            .x_label_formatter(&|x| pow2_label(*x))
            .y_label_formatter(&ylabel)
            .label_style(tick_style())
            .axis_desc_style(label_style())
            .bold_line_style(RGBColor(225, 225, 225))
            .max_light_lines(0)
            .draw()?;
        let first = self.points[0].2;
        let ideal = vec![(x_range.start, first), (x_range.end, first)];
        chart.draw_series(DashedLineSeries::new(ideal, 6, 5, BLACK.stroke_width(1)))?;
        let pts: Vec<(f64, f64)> = self.points.iter().map(|p| (log2(p.0), p.2)).collect();
        let c = super::METHOD_COLORS[3];
        chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        if let Some(k) = self.knee {
            knee_line(&mut chart, k, (0.0, top), self.right_half(k.0))?;
        }
        Ok(())
    }
}

impl Figure for TrainingChart {
    fn size(&self) -> (u32, u32) {
        SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let root = root.titled(&self.title, title_style())?;
        let c = super::METHOD_COLORS[3];
        let mut keys = vec![
            Key::line("best plan", c, false),
            Key::line("ideal (linear from the smallest count)", BLACK, true),
        ];
        if let Some((_, t)) = self.knee {
            keys.push(Key::line(
                format!(
                    "knee: largest count with every step's marginal efficiency ≥ {:.0}%",
                    100.0 * t
                ),
                RGBColor(200, 30, 30),
                true,
            ));
        }
        let plot = with_legend(&root, &keys)?;
        if self.points.is_empty() {
            plot.draw(&Text::new(
                "no GPU count has a plan that fits",
                (40, 60),
                label_style(),
            ))?;
            return Ok(());
        }
        let (left, right) = plot.split_horizontally(SIZE.0 / 2);
        self.days(&left)?;
        self.gpu_hours(&right)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_steps_are_round() {
        assert_eq!(super::super::nice_step(1300.0), 2000.0);
        assert_eq!(super::super::nice_step(0.04), 0.05);
        let t = log10_ticks(0.0, 2.1);
        let v: Vec<f64> = t.iter().map(|x| 10f64.powf(*x).round()).collect();
        assert_eq!(v, vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(compact(1_234_567.0), "1.23M");
        assert_eq!(compact(45_600.0), "45.6k");
        assert_eq!(compact(950.0), "950");
    }
}
