//! The simulated step as a Chrome trace (Trace Event Format, JSON object form): one process
//! per stage, one thread per stream, a counter of activations held; opens in Perfetto
//! (ui.perfetto.dev) and chrome://tracing. Timestamps are microseconds, as the format says.

use super::schedule::Task;
use crate::units::{GIB, US};
use serde::Serialize;

/// A rank's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Stream {
    /// Passes, with the TP/CP/EP collectives the cost model puts on the critical path, and
    /// the optimizer step.
    Compute,
    /// Pipeline sends to neighbouring stages.
    P2p,
    /// Data-parallel gradient reduction and ZeRO-3 collectives.
    Dp,
}

impl Stream {
    const ALL: [Stream; 3] = [Stream::Compute, Stream::P2p, Stream::Dp];

    fn tid(self) -> u64 {
        match self {
            Stream::Compute => 1,
            Stream::P2p => 2,
            Stream::Dp => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stream::Compute => "compute (TP collectives inline)",
            Stream::P2p => "p2p sends",
            Stream::Dp => "dp communication",
        }
    }
}

/// One operation on one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    /// Stage.
    pub stage: usize,
    /// Stream.
    pub stream: Stream,
    /// Operation name.
    pub name: &'static str,
    /// Start, seconds from the step's start.
    pub start_s: f64,
    /// Duration, seconds.
    pub dur_s: f64,
    /// The pass it belongs to, if any.
    pub task: Option<Task>,
    /// Receiving stage of a send.
    pub peer: Option<usize>,
}

impl Slice {
    pub(super) fn new(
        stage: usize,
        stream: Stream,
        name: &'static str,
        start: f64,
        d: f64,
    ) -> Slice {
        Slice {
            stage,
            stream,
            name,
            start_s: start,
            dur_s: d,
            task: None,
            peer: None,
        }
    }
    pub(super) fn task(mut self, t: Task) -> Slice {
        self.task = Some(t);
        self
    }
    pub(super) fn peer(mut self, stage: usize) -> Slice {
        self.peer = Some(stage);
        self
    }
}

/// Arguments shown when an event is selected.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Args {
    /// Process or thread name (metadata events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sort position of a process or thread (metadata events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_index: Option<u64>,
    /// Micro-batch id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<u32>,
    /// Model chunk on the stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// Receiving stage of a send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_stage: Option<usize>,
    /// Counter value.
    #[serde(rename = "GiB", skip_serializing_if = "Option::is_none")]
    pub gib: Option<f64>,
}

/// One trace event: `X` (complete slice), `C` (counter) or `M` (metadata).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceEvent {
    /// Name.
    pub name: String,
    /// Phase.
    pub ph: &'static str,
    /// Process: stage + 1.
    pub pid: u64,
    /// Thread: the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u64>,
    /// Timestamp, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<f64>,
    /// Duration, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dur: Option<f64>,
    /// Arguments.
    pub args: Args,
}

/// A recorded timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    stages: usize,
    /// Operations, in the order they were issued.
    pub slices: Vec<Slice>,
    /// (stage, time s, activation bytes held), in time order per stage.
    pub memory: Vec<(usize, f64, f64)>,
    /// Step time, seconds.
    pub step_s: f64,
}

impl Trace {
    pub(super) fn new(stages: usize) -> Trace {
        Trace {
            stages,
            slices: Vec::new(),
            memory: (0..stages).map(|s| (s, 0.0, 0.0)).collect(),
            step_s: 0.0,
        }
    }

    pub(super) fn slice(&mut self, s: Slice) {
        self.slices.push(s);
    }

    pub(super) fn memory(&mut self, stage: usize, t: f64, bytes: f64) {
        self.memory.push((stage, t, bytes));
    }

    pub(super) fn finish(mut self, step_s: f64) -> Trace {
        // Stable: changes at the same instant keep the order they happened in.
        self.memory
            .sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        self.step_s = step_s;
        self
    }

    /// Names and sort order of every stage (process) and stream (thread).
    fn metadata(&self) -> Vec<TraceEvent> {
        let mut out = Vec::with_capacity(8 * self.stages);
        let meta = |name: &str, pid: u64, tid: Option<u64>, args: Args| TraceEvent {
            name: name.to_string(),
            ph: "M",
            pid,
            tid,
            ts: None,
            dur: None,
            args,
        };
        for s in 0..self.stages as u64 {
            let named = |n: String| Args {
                name: Some(n),
                ..Args::default()
            };
            let sorted = |i: u64| Args {
                sort_index: Some(i),
                ..Args::default()
            };
            out.push(meta(
                "process_name",
                s + 1,
                None,
                named(format!("stage {s}")),
            ));
            out.push(meta("process_sort_index", s + 1, None, sorted(s)));
            for st in Stream::ALL {
                let tid = Some(st.tid());
                out.push(meta("thread_name", s + 1, tid, named(st.name().into())));
                out.push(meta("thread_sort_index", s + 1, tid, sorted(st.tid())));
            }
        }
        out
    }

    /// Every event: names of stages and streams, slices, activation counters.
    pub fn events(&self) -> Vec<TraceEvent> {
        let mut out = self.metadata();
        out.reserve(self.slices.len() + self.memory.len());
        out.extend(self.slices.iter().map(|s| TraceEvent {
            name: s.name.to_string(),
            ph: "X",
            pid: s.stage as u64 + 1,
            tid: Some(s.stream.tid()),
            ts: Some(s.start_s / US),
            dur: Some(s.dur_s / US),
            args: Args {
                micro_batch: s.task.map(|t| t.mb),
                chunk: s.task.map(|t| t.chunk),
                to_stage: s.peer,
                ..Args::default()
            },
        }));
        out.extend(self.memory.iter().map(|&(stage, t, bytes)| TraceEvent {
            name: "activations".into(),
            ph: "C",
            pid: stage as u64 + 1,
            tid: None,
            ts: Some(t / US),
            dur: None,
            args: Args {
                gib: Some(bytes / GIB),
                ..Args::default()
            },
        }));
        out
    }

    /// The trace file's text: `{"traceEvents": [...], "displayTimeUnit": "ms"}`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct File {
            #[serde(rename = "traceEvents")]
            events: Vec<TraceEvent>,
            #[serde(rename = "displayTimeUnit")]
            unit: &'static str,
        }
        serde_json::to_string(&File {
            events: self.events(),
            unit: "ms",
        })
        .expect("trace events serialise")
    }
}
