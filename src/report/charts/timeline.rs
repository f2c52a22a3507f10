//! The chosen plan's simulated step as a timeline: one row per pipeline stage showing what
//! its compute stream runs (forward, backward, recompute, collectives, sends, optimizer) and
//! a thin strip below it for the data-parallel stream.

use super::{
    Drawn, Figure, Key, Ticked, label_style, tick_style, title_style, with_legend, zero_axis,
};
use crate::sim::trace::{Stream, Trace};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Activity classes of the compute row, in legend order, with colours.
pub const ACTIVITIES: [(&str, RGBColor); 7] = [
    ("forward", RGBColor(0, 114, 178)),
    ("backward", RGBColor(86, 180, 233)),
    ("recompute", RGBColor(240, 228, 66)),
    ("TP/CP/EP collectives", RGBColor(230, 159, 0)),
    ("pipeline send", RGBColor(0, 158, 115)),
    ("ZeRO wait", RGBColor(204, 121, 167)),
    ("optimizer", RGBColor(120, 94, 60)),
];
const DP: (&str, RGBColor) = (
    "DP stream: gradient reduction, ZeRO-3",
    RGBColor(213, 94, 0),
);

/// Activity index of a trace slice on the compute or p2p stream.
fn activity(name: &str, stream: Stream) -> usize {
    match (stream, name) {
        (Stream::P2p, _) => 4,
        (_, "forward") => 0,
        (_, "backward") => 1,
        (_, "recompute") => 2,
        (_, "optimizer step") => 6,
        // The simulator's compute-stream waits on ZeRO collectives ("zero gather wait",
        // "zero gather/reduce wait"); "zero3" had matched none, so they read as TP/CP/EP.
        (_, n) if n.starts_with("zero") => 5,
        _ => 3,
    }
}

/// A stage's row: (start s, end s, activity) on the compute row and (start, end) on the DP
/// strip.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// Compute-stream and send intervals.
    pub compute: Vec<(f64, f64, usize)>,
    /// Data-parallel stream intervals.
    pub dp: Vec<(f64, f64)>,
}

/// The timeline of one simulated step.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineChart {
    /// Title.
    pub title: String,
    /// Step time, seconds.
    pub step_s: f64,
    /// One row per stage.
    pub rows: Vec<Row>,
}

impl TimelineChart {
    /// The rows of a recorded trace.
    pub fn from_trace(title: String, trace: &Trace, stages: usize) -> TimelineChart {
        let mut rows = vec![Row::default(); stages];
        for s in &trace.slices {
            let iv = (s.start_s, s.start_s + s.dur_s);
            match s.stream {
                Stream::Dp => rows[s.stage].dp.push(iv),
                st => rows[s.stage]
                    .compute
                    .push((iv.0, iv.1, activity(s.name, st))),
            }
        }
        TimelineChart {
            title,
            step_s: trace.step_s,
            rows,
        }
    }

    fn row_px(&self) -> u32 {
        (560 / self.rows.len().max(1) as u32).clamp(10, 40)
    }
}

/// Colours each of `bins` equal columns of [0, t1) with the activity that takes most of it
/// (`None` when idle takes most), and merges neighbouring columns of one colour:
/// (start, end, activity) runs in seconds.
pub fn runs(intervals: &[(f64, f64, usize)], t1: f64, bins: usize) -> Vec<(f64, f64, usize)> {
    let w = t1 / bins as f64;
    let mut time = vec![[0.0f64; ACTIVITIES.len()]; bins];
    for &(a, b, k) in intervals {
        let (first, last) = ((a / w) as usize, ((b / w) as usize).min(bins - 1));
        for (i, bin) in time.iter_mut().enumerate().take(last + 1).skip(first) {
            let lo = a.max(i as f64 * w);
            let hi = b.min((i + 1) as f64 * w);
            bin[k] += (hi - lo).max(0.0);
        }
    }
    let mut out: Vec<(f64, f64, usize)> = Vec::new();
    for (i, t) in time.iter().enumerate() {
        let (k, busiest) = t
            .iter()
            .enumerate()
            .fold((0, 0.0), |m, (k, &v)| if v > m.1 { (k, v) } else { m });
        let idle = w - t.iter().sum::<f64>();
        if busiest <= 0.0 || idle > busiest {
            continue;
        }
        let (a, b) = (i as f64 * w, (i + 1) as f64 * w);
        match out.last_mut() {
            Some(last) if last.2 == k && (last.1 - a).abs() < w * 1e-6 => last.1 = b,
            _ => out.push((a, b, k)),
        }
    }
    out
}

/// Pixels per column: 1 where forward and backward passes are wide, wider where they are
/// thin, so a column holds a few passes and shows the one that dominates it.
fn column_px(rows: &[Row], step_s: f64, plot_px: u32) -> u32 {
    let mut widths: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.compute.iter().filter(|c| c.2 <= 1).map(|c| c.1 - c.0))
        .collect();
    if widths.is_empty() {
        return 1;
    }
    widths.sort_by(f64::total_cmp);
    let median_px = widths[widths.len() / 2] / step_s * plot_px as f64;
    if median_px >= 4.0 {
        1
    } else {
        ((3.0 / median_px.max(0.1)).ceil() as u32).clamp(2, 8)
    }
}

impl Figure for TimelineChart {
    fn size(&self) -> (u32, u32) {
        (1200, 170 + self.row_px() * self.rows.len() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let root = root.titled(&self.title, title_style())?;
        // The plot's width: the chart's less the stage labels (78), margins (12 + 24) and
        // the axis line.
        let plot_px = root
            .dim_in_pixel()
            .0
            .saturating_sub(78 + 12 + 24 + 2)
            .max(1);
        let shown = self.shown(plot_px);
        let used = |k: usize| shown.iter().any(|r| r.compute.iter().any(|c| c.2 == k));
        let mut keys: Vec<Key> = ACTIVITIES
            .iter()
            .enumerate()
            .filter(|(k, _)| used(*k))
            .map(|(_, (n, c))| Key::boxed(*n, *c))
            .collect();
        if shown.iter().any(|r| !r.dp.is_empty()) {
            keys.push(Key::boxed(DP.0, DP.1));
        }
        let plot = with_legend(&root, &keys)?;
        let p = self.rows.len();
        let scale = if self.step_s < 10.0 { 1e3 } else { 1.0 };
        let mut chart = self.axes(&plot, scale)?;
        // Where passes are drawn as they are, each forward or backward pass starts one pixel
        // late, so passes of consecutive micro-batches read as separate blocks.
        let exact = column_px(&self.rows, self.step_s, plot_px) == 1;
        let gap = if exact {
            self.step_s / plot_px as f64
        } else {
            0.0
        };
        for (i, row) in shown.iter().enumerate() {
            let y = (p - 1 - i) as f64;
            chart.draw_series(row.compute.iter().map(|&(a, b, k)| {
                let a = if k <= 1 { (a + gap).min(b) } else { a };
                Rectangle::new(
                    [(a * scale, y - 0.05), (b * scale, y + 0.4)],
                    ACTIVITIES[k].1.filled(),
                )
            }))?;
            chart.draw_series(row.dp.iter().map(|&(a, b)| {
                Rectangle::new([(a * scale, y - 0.4), (b * scale, y - 0.15)], DP.1.filled())
            }))?;
        }
        Ok(())
    }
}

impl TimelineChart {
    /// The chart's axes, mesh drawn: time (ms, or s for steps of 10 s and more, as `scale`
    /// says) and one row per stage.
    fn axes<'a, DB: DrawingBackend>(
        &self,
        plot: &'a DrawingArea<DB, Shift>,
        scale: f64,
    ) -> Result<ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>, Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        let p = self.rows.len();
        let (xaxis, decimals) = zero_axis(self.step_s * scale);
        let every = if self.row_px() >= 14 { 1 } else { 4 };
        let ticks: Vec<f64> = (0..p).step_by(every).map(|i| i as f64).collect();
        let mut chart = ChartBuilder::on(plot)
            .margin(12)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(78)
            .build_cartesian_2d(xaxis, Ticked::new(-0.5, p as f64 - 0.5, ticks))?;
        let unit = if scale > 1.0 { "ms" } else { "s" };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(format!("time in the step ({unit})"))
            .y_label_formatter(&|y| format!("stage {}", p as i64 - 1 - y.round() as i64))
            .x_label_formatter(&|x| format!("{x:.decimals$}"))
            .label_style(tick_style())
            .axis_desc_style(label_style())
            .bold_line_style(RGBColor(225, 225, 225))
            .max_light_lines(0)
            .draw()?;
        Ok(chart)
    }

    /// The rows as drawn on a plot `plot_px` wide: as they are where passes are wide (less
    /// what is under half a pixel), else binned into columns that show their dominant
    /// activity.
    fn shown(&self, plot_px: u32) -> Vec<Row> {
        let col = column_px(&self.rows, self.step_s, plot_px);
        if col == 1 {
            // Drop what is narrower than half a pixel: it would not show.
            let min = 0.5 * self.step_s / plot_px as f64;
            return self
                .rows
                .iter()
                .map(|r| Row {
                    compute: r
                        .compute
                        .iter()
                        .filter(|c| c.1 - c.0 >= min)
                        .copied()
                        .collect(),
                    dp: r.dp.iter().filter(|c| c.1 - c.0 >= min).copied().collect(),
                })
                .collect();
        }
        let bins = (plot_px / col).max(1) as usize;
        self.rows
            .iter()
            .map(|r| {
                let dp: Vec<(f64, f64, usize)> = r.dp.iter().map(|&(a, b)| (a, b, 0)).collect();
                Row {
                    compute: runs(&r.compute, self.step_s, bins),
                    dp: runs(&dp, self.step_s, bins)
                        .into_iter()
                        .map(|(a, b, _)| (a, b))
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_the_dominant_activity_and_merge() {
        // 10 columns of 1 s: forward on [0, 3), backward on [3, 4.4), idle after, optimizer
        // on [9, 10).
        let iv = [(0.0, 3.0, 0), (3.0, 4.4, 1), (9.0, 10.0, 6)];
        let r = runs(&iv, 10.0, 10);
        // Column 4 holds 0.4 s of backward and 0.6 s idle: idle wins.
        assert_eq!(r, vec![(0.0, 3.0, 0), (3.0, 4.0, 1), (9.0, 10.0, 6)]);
        // Alternating thin passes: 0.3 s forward + 0.6 s backward per column → backward.
        let thin: Vec<(f64, f64, usize)> = (0..10)
            .flat_map(|i| {
                let t = i as f64;
                [(t, t + 0.3, 0), (t + 0.3, t + 0.9, 1)]
            })
            .collect();
        assert_eq!(runs(&thin, 10.0, 10), vec![(0.0, 10.0, 1)]);
    }

    /// Every name the simulator gives a compute-stream slice has its own class: its ZeRO
    /// waits are not TP/CP/EP collectives (QA: 489 ms of them had been drawn as such).
    #[test]
    fn simulator_slices_land_in_their_class() {
        assert_eq!(activity("zero gather wait", Stream::Compute), 5);
        assert_eq!(activity("zero gather/reduce wait", Stream::Compute), 5);
        assert_eq!(activity("optimizer step", Stream::Compute), 6);
        assert_eq!(activity("forward", Stream::P2p), 4);
        assert_eq!(ACTIVITIES[5].0, "ZeRO wait");
    }
}
