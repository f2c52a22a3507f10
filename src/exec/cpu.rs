//! The cpu backend: the same probes on the host, so calibrate → profile → estimate runs and is
//! tested without a GPU. GEMMs run with matrixmultiply's packed SIMD kernels, one core per
//! thread-device (f32: the cores have no 16-bit GEMM, so the bf16/fp16 points are f32 GEMMs of
//! that shape); copies time memcpy; collectives run between threads standing for devices
//! (`cpu_comm`). GEMM and copy probes run on every thread-device at once and report the mean
//! per device, because in a training step every device computes at the same time and the
//! cores share caches and memory bandwidth. Every time is device time (`clock`): the CPU time
//! of the probing thread, so other processes on the host's cores do not slow it down.

use super::clock::thread_cpu_s;
use super::probe::Backend;
use super::{ExecError, cpu_comm};
use crate::calib::{Meta, Span};
use crate::graph::Coll;
use crate::units::{Dtype, MIB};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

/// One thread-device's probe buffers, grown to the largest probe seen.
#[derive(Debug, Default)]
struct Buffers {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    src: Vec<u8>,
    dst: Vec<u8>,
}

/// A probe one thread-device runs.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// `iters` GEMMs (m, n, k).
    Gemm((usize, usize, usize), u32),
    /// `iters` copies of this many bytes, moving through an arena of the last size.
    Copy(usize, u32, usize),
}

/// One long-lived thread standing for a device (like a rank of `verify`), owning its buffers.
#[derive(Debug)]
struct Worker {
    jobs: Sender<Job>,
    done: Receiver<f64>,
    thread: Option<JoinHandle<()>>,
}

/// Threads standing for devices, each with the buffers its probes reuse.
#[derive(Debug)]
pub struct Cpu {
    devices: u64,
    max_message_bytes: f64,
    workers: Vec<Worker>,
}

/// How the cpu probes (and `verify`'s host-speed control) time GEMMs and copies: the median
/// of five runs of at least 5 ms after a warm-up — a shared host's caches and memory
/// bandwidth vary from one millisecond to the next.
pub const TIMING: super::Timing = super::Timing {
    warmup: 1,
    repeats: 5,
    min_run_s: 0.005,
    max_iters: 50,
};

impl Cpu {
    /// A backend with `devices` threads as devices and collectives up to `max_message_bytes`.
    pub fn new(devices: u64, max_message_bytes: f64) -> Cpu {
        let devices = devices.max(1);
        let start = Arc::new(Barrier::new(devices as usize));
        let workers = (0..devices)
            .map(|_| {
                let (jobs, rx) = channel::<Job>();
                let (tx, done) = channel();
                let start = start.clone();
                let thread = std::thread::spawn(move || {
                    let mut b = Buffers::default();
                    for job in rx {
                        let s = match job {
                            Job::Gemm(shape, iters) => gemm_on(&mut b, &start, shape, iters),
                            Job::Copy(n, iters, arena) => copy_on(&mut b, &start, n, iters, arena),
                        };
                        if tx.send(s).is_err() {
                            break;
                        }
                    }
                });
                Worker {
                    jobs,
                    done,
                    thread: Some(thread),
                }
            })
            .collect();
        Cpu {
            devices,
            max_message_bytes,
            workers,
        }
    }

    /// Runs `job` on every device at once (started together) and returns the mean of the
    /// device seconds each reports.
    fn on_every_device(&mut self, job: Job) -> Result<f64, ExecError> {
        let lost = || ExecError::Device {
            backend: "cpu",
            call: "probe thread".into(),
            message: "stopped".into(),
        };
        for w in &self.workers {
            w.jobs.send(job).map_err(|_| lost())?;
        }
        let mut total = 0.0;
        for w in &self.workers {
            total += w.done.recv().map_err(|_| lost())?;
        }
        Ok(total / self.workers.len() as f64)
    }
}

impl Drop for Cpu {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let (tx, _) = channel();
            drop(std::mem::replace(&mut w.jobs, tx));
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Fills `v` to `len` with a deterministic pattern of values in [-1, 1) (no denormals, no
/// zeros that could shortcut work). The probes' operands and `verify`'s (`cpu_run`) alike.
pub(super) fn fill(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        let start = v.len();
        v.extend((start..len).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0));
    }
}

/// Device seconds of `iters` GEMMs C[m,n] = A[m,k]·B[k,n] on `b`, timed after one untimed
/// call (a fresh thread's first GEMM also pays for its packing buffers' page faults) and
/// `start`.
fn gemm_on(b: &mut Buffers, start: &Barrier, (m, n, k): (usize, usize, usize), iters: u32) -> f64 {
    fill(&mut b.a, m * k);
    fill(&mut b.b, k * n);
    fill(&mut b.c, m * n);
    sgemm(&b.a, &b.b, &mut b.c, (m, n, k));
    start.wait();
    let t0 = thread_cpu_s();
    for _ in 0..iters {
        sgemm(&b.a, &b.b, &mut b.c, (m, n, k));
    }
    let s = thread_cpu_s() - t0;
    std::hint::black_box(&b.c);
    s
}

/// Row-major C[m,n] = A[m,k]·B[k,n] in f32 on one core (matrixmultiply), on the leading
/// elements of `a`, `b` and `c`. The one GEMM of the cpu backend: the probes time it and
/// `verify` (`cpu_run`) runs it, so a profile's points price exactly what a run executes
/// (`verify::host_speed` compares the two).
pub(super) fn sgemm(a: &[f32], b: &[f32], c: &mut [f32], (m, n, k): (usize, usize, usize)) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "sgemm {m}x{n}x{k} on operands of {}, {} and {} elements",
        a.len(),
        b.len(),
        c.len()
    );
    // SAFETY: a holds ≥ m·k, b ≥ k·n, c ≥ m·n f32s (asserted), row-major with the strides
    // given; c is a unique borrow, so it does not alias a or b.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Device seconds of `iters` copies of `n` bytes on `b`, timed after `start`. Each copy moves
/// on through source and destination arenas of `arena` bytes (at least `n`), so every copy
/// reads and writes memory the caches do not hold — as `verify`'s memory-bound kernels stream
/// through a rank's memory (`cpu_run::memory_kernel`). Repeating one small copy in place had
/// timed the caches; and chunks run slower than one copy of the whole arena, which the C
/// library writes with non-temporal stores (no read for ownership), about 25% slower on the
/// machines these probes ran on.
fn copy_on(b: &mut Buffers, start: &Barrier, n: usize, iters: u32, arena: usize) -> f64 {
    let arena = arena.max(n);
    // Whole new buffers (filled by memset, fast in debug builds too, and touched before the
    // clock starts) rather than element-by-element growth.
    if b.src.len() < arena {
        b.src = vec![1; arena];
        b.dst = vec![2; arena];
    }
    let mut at = 0;
    start.wait();
    let t0 = thread_cpu_s();
    for i in 0..iters {
        if at + n > arena {
            at = 0;
        }
        b.src[at] = i as u8;
        b.dst[at..at + n].copy_from_slice(&b.src[at..at + n]);
        std::hint::black_box(&b.dst);
        at += n;
    }
    thread_cpu_s() - t0
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

impl Backend for Cpu {
    fn meta(&self) -> Meta {
        Meta {
            device: format!("cpu: {}", cpu_name()),
            backend: "cpu".into(),
            date: Some(super::today()),
            notes: Some(format!(
                "cpu backend: GEMMs in f32 with matrixmultiply, one core per thread-device, \
                 all {} devices at once (recorded under the 16-bit types the planner asks for), \
                 copies by memcpy on every device at once, collectives between the \
                 threads standing for devices (ring algorithms, real data movement); times are \
                 device time (thread CPU time, Lamport clocks across messages). A stand-in for a \
                 GPU profile, to exercise the loop and price `planner verify --backend cpu`.",
                self.devices
            )),
            ..Default::default()
        }
    }

    fn devices(&self) -> u64 {
        self.devices
    }

    fn gemm_dtypes(&self) -> Vec<Dtype> {
        vec![Dtype::Bf16, Dtype::Fp16]
    }

    fn one_gemm_for_all_dtypes(&self) -> bool {
        true
    }

    fn max_gemm_bytes(&self) -> f64 {
        // Room for the 256 MiB copy probe's two buffers on up to 4 thread-devices (2 GiB in
        // all; 128 MiB copies on 8): copies that large stream from main memory (the smaller
        // ones partly from the caches), the bandwidth `verify` prices memory-bound kernels
        // with.
        (2048.0 * MIB / self.devices as f64).clamp(64.0 * MIB, 512.0 * MIB)
    }

    fn max_message_bytes(&self) -> f64 {
        self.max_message_bytes
    }

    fn gemm(
        &mut self,
        _dtype: Dtype,
        m: u64,
        n: u64,
        k: u64,
        iters: u32,
    ) -> Result<f64, ExecError> {
        let shape = (m as usize, n as usize, k as usize);
        self.on_every_device(Job::Gemm(shape, iters))
    }

    fn copy(&mut self, bytes: f64, iters: u32) -> Result<f64, ExecError> {
        // The arena every copy moves through: as large as the executor's streams
        // (`cpu_run::ARENA_BYTES`, beyond the caches), within the device's allowance for two
        // buffers (as `copy_phase` sizes them).
        let arena = super::cpu_run::ARENA_BYTES.min((self.max_gemm_bytes() / 2.0) as usize);
        self.on_every_device(Job::Copy(bytes as usize, iters, arena))
    }

    fn collective(
        &mut self,
        coll: Coll,
        ranks: u64,
        span: Span,
        bytes: f64,
        iters: u32,
    ) -> Result<f64, ExecError> {
        if span == Span::Inter || ranks > self.devices || ranks < 2 {
            return Err(ExecError::Config(format!(
                "cpu backend: {} ranks {} node: the cpu backend has {} thread-devices in one node",
                ranks,
                span.name(),
                self.devices
            )));
        }
        Ok(cpu_comm::run(coll, ranks as usize, bytes as usize, iters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgemm_multiplies_the_leading_elements() {
        // [1 2; 3 4]·[5 6; 7 8] = [19 22; 43 50], in buffers longer than the operands.
        let a = [1.0, 2.0, 3.0, 4.0, 9.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut c = [0.0f32; 6];
        sgemm(&a, &b, &mut c, (2, 2, 2));
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0, 0.0, 0.0]);
    }

    #[test]
    fn fill_extends_the_same_pattern() {
        let mut v = Vec::new();
        fill(&mut v, 3);
        assert_eq!(
            v,
            [
                -1.0,
                7919.0 % 2003.0 / 1001.5 - 1.0,
                15838.0 % 2003.0 / 1001.5 - 1.0
            ]
        );
        let mut w = v.clone();
        fill(&mut w, 2); // never shrinks
        fill(&mut v, 5);
        assert_eq!((w.len(), &v[..3]), (3, &w[..]));
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x) && *x != 0.0));
    }
}
