//! The cpu backend: the same probes on the host, so calibrate → profile → estimate runs and is
//! tested without a GPU. GEMMs run on one core with matrixmultiply's packed SIMD kernels
//! (f32: the cores have no 16-bit GEMM, so the bf16/fp16 points are f32 GEMMs of that shape);
//! copies time memcpy; collectives run between threads standing for devices (`cpu_comm`).
//! Every time is device time (`clock`): the CPU time of the probing thread, so other
//! processes on the host's cores do not slow the measurement down.

use super::clock::thread_cpu_s;
use super::probe::Backend;
use super::{ExecError, cpu_comm};
use crate::calib::{Meta, Span};
use crate::graph::Coll;
use crate::units::{Dtype, MIB};

/// Threads standing for devices and the buffers the probes reuse.
#[derive(Debug)]
pub struct Cpu {
    devices: u64,
    max_message_bytes: f64,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    src: Vec<u8>,
    dst: Vec<u8>,
}

impl Cpu {
    /// A backend with `devices` threads as devices and collectives up to `max_message_bytes`.
    pub fn new(devices: u64, max_message_bytes: f64) -> Cpu {
        Cpu {
            devices: devices.max(1),
            max_message_bytes,
            a: Vec::new(),
            b: Vec::new(),
            c: Vec::new(),
            src: Vec::new(),
            dst: Vec::new(),
        }
    }
}

/// Fills `v` to `len` with a deterministic pattern of values in [-1, 1) (no denormals, no
/// zeros that could shortcut work).
fn fill(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        let start = v.len();
        v.extend((start..len).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0));
    }
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
                "cpu backend: GEMMs on one core in f32 with matrixmultiply (recorded under the \
                 16-bit types the planner asks for), copies by memcpy, collectives between {} \
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

    fn max_gemm_bytes(&self) -> f64 {
        256.0 * MIB
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
        let (m, n, k) = (m as usize, n as usize, k as usize);
        fill(&mut self.a, m * k);
        fill(&mut self.b, k * n);
        fill(&mut self.c, m * n);
        let t0 = thread_cpu_s();
        for _ in 0..iters {
            // SAFETY: a holds ≥ m·k, b ≥ k·n, c ≥ m·n f32s, row-major with the strides given;
            // c does not alias a or b.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    self.a.as_ptr(),
                    k as isize,
                    1,
                    self.b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    self.c.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
        let s = thread_cpu_s() - t0;
        std::hint::black_box(&self.c);
        Ok(s)
    }

    fn copy(&mut self, bytes: f64, iters: u32) -> Result<f64, ExecError> {
        let n = bytes as usize;
        self.src.resize(n.max(self.src.len()), 1);
        self.dst.resize(n.max(self.dst.len()), 0);
        let t0 = thread_cpu_s();
        for i in 0..iters {
            self.src[i as usize % n.max(1)] = i as u8;
            self.dst[..n].copy_from_slice(&self.src[..n]);
            std::hint::black_box(&self.dst);
        }
        Ok(thread_cpu_s() - t0)
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
