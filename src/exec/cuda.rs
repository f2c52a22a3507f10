//! The cuda backend: cuBLAS GEMMs (cublasGemmEx, tensor cores, fp32 accumulation) and device
//! copies on GPU 0 timed with CUDA events, NCCL collectives over the local GPUs (and other
//! nodes through `rendezvous`). CUDA is loaded at run time by cudarc: every entry point first
//! checks that the library is present, so a machine without one gets `ExecError::Unavailable`
//! instead of cudarc's panic.

use super::ExecError;
use super::cuda_nccl::Nccl;
use super::probe::Backend;
use super::rendezvous::{Env, Rendezvous};
use crate::calib::{Meta, Span};
use crate::graph::Coll;
use crate::units::Dtype;
use cudarc::cublas::sys as blas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;
use std::time::Duration;

pub(super) fn device_err(call: &str, e: impl std::fmt::Debug) -> ExecError {
    ExecError::Device {
        backend: "cuda",
        call: call.to_string(),
        message: format!("{e:?}"),
    }
}

/// Whether the CUDA driver library can be loaded (no panic when it cannot).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library under its known names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether cuBLAS can be loaded.
pub fn cublas_present() -> bool {
    // SAFETY: as above.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// Whether NCCL can be loaded (cudarc looks for `libnccl.so`; pip wheels ship
/// `libnccl.so.2`, so a symlink may be needed: calibrate/gpu-check.sh makes one).
pub fn nccl_present() -> bool {
    // SAFETY: as above.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

/// GEMM operands on GPU 0, grown to the largest shape seen.
struct GemmBuffers {
    a: CudaSlice<u16>,
    b: CudaSlice<u16>,
    c: CudaSlice<u16>,
}

/// The cuda backend.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: cudarc::cublas::CudaBlas,
    gemm: Option<GemmBuffers>,
    copy: Option<(CudaSlice<u8>, CudaSlice<u8>)>,
    nccl: Option<Nccl>,
    devices: u64,
    max_message_bytes: f64,
}

fn version(code: i32, major_div: i32, minor_div: i32) -> String {
    format!(
        "{}.{}.{}",
        code / major_div,
        code % major_div / minor_div,
        code % minor_div
    )
}

impl Cuda {
    /// Opens every local GPU (or the first `max_devices`). Multi-node when WORLD_SIZE > 1
    /// (one process per node, each driving its node's GPUs).
    pub fn open(
        max_devices: Option<u64>,
        max_message_bytes: f64,
        env: Option<Env>,
    ) -> Result<Cuda, ExecError> {
        if !driver_present() {
            return Err(ExecError::Unavailable(
                "no CUDA driver library (libcuda.so) on this machine: --backend cuda needs an NVIDIA \
                 GPU and its driver; use --backend cpu to run the probes on the cores"
                    .into(),
            ));
        }
        let count = CudaContext::device_count().map_err(|e| {
            ExecError::Unavailable(format!("the CUDA driver found no usable GPU ({e:?})"))
        })? as u64;
        if count == 0 {
            return Err(ExecError::Unavailable(
                "the CUDA driver reports no GPU".into(),
            ));
        }
        if !cublas_present() {
            return Err(ExecError::Unavailable(
                "cuBLAS (libcublas.so.12) not found: install the CUDA toolkit or the \
                 nvidia-cublas-cu12 wheel and add its lib folder to LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let devices = max_devices.map_or(count, |m| m.clamp(1, count));
        let ctx = CudaContext::new(0).map_err(|e| device_err("cuCtxCreate(0)", e))?;
        // SAFETY: every probe buffer is used on the one stream of its device.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| device_err("cuStreamCreate", e))?;
        let blas = cudarc::cublas::CudaBlas::new(stream.clone())
            .map_err(|e| device_err("cublasCreate", e))?;
        let rdv = match env {
            Some(env) => Some(Rendezvous::join(&env, Duration::from_secs(600))?),
            None => None,
        };
        let nccl = if devices > 1 || rdv.is_some() {
            if !nccl_present() {
                return Err(ExecError::Unavailable(
                    "NCCL not found: cudarc loads `libnccl.so`, while the nvidia-nccl-cu12 wheel \
                     and distribution packages install `libnccl.so.2`; link one to the other in \
                     a folder on LD_LIBRARY_PATH (calibrate/gpu-check.sh does), or pass --devices 1"
                        .into(),
                ));
            }
            Some(Nccl::open(devices as usize, max_message_bytes, rdv)?)
        } else {
            None
        };
        Ok(Cuda {
            ctx,
            stream,
            blas,
            gemm: None,
            copy: None,
            nccl,
            devices,
            max_message_bytes,
        })
    }

    fn timed(
        &self,
        iters: u32,
        mut f: impl FnMut() -> Result<(), ExecError>,
    ) -> Result<f64, ExecError> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .ctx
            .new_event(flags)
            .map_err(|e| device_err("cuEventCreate", e))?;
        let end = self
            .ctx
            .new_event(flags)
            .map_err(|e| device_err("cuEventCreate", e))?;
        start
            .record(&self.stream)
            .map_err(|e| device_err("cuEventRecord", e))?;
        for _ in 0..iters {
            f()?;
        }
        end.record(&self.stream)
            .map_err(|e| device_err("cuEventRecord", e))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(|e| device_err("cuEventElapsedTime", e))?;
        Ok(ms as f64 * 1e-3)
    }

    fn gemm_buffers(&mut self, m: u64, n: u64, k: u64) -> Result<(), ExecError> {
        let need = [(m * k) as usize, (k * n) as usize, (m * n) as usize];
        let ok = self
            .gemm
            .as_ref()
            .is_some_and(|g| g.a.len() >= need[0] && g.b.len() >= need[1] && g.c.len() >= need[2]);
        if ok {
            return Ok(());
        }
        self.gemm = None;
        let have = |i: usize| need[i].max(1);
        // Random signs and mantissas with a fixed exponent: finite in fp16 and bf16 alike,
        // so neither type meets NaNs, infinities or denormals.
        let pattern = |len: usize| -> Vec<u16> {
            let mut x: u32 = 0x9E37_79B9;
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    0x3800 | (x as u16 & 0x83FF)
                })
                .collect()
        };
        let up = |len: usize| {
            self.stream
                .clone_htod(&pattern(len))
                .map_err(|e| device_err("cuMemcpyHtoD", e))
        };
        let (a, b) = (up(have(0))?, up(have(1))?);
        let c = self
            .stream
            .alloc_zeros::<u16>(have(2))
            .map_err(|e| device_err("cuMemAlloc", e))?;
        self.gemm = Some(GemmBuffers { a, b, c });
        Ok(())
    }
}

impl Backend for Cuda {
    fn meta(&self) -> Meta {
        let mut driver = 0i32;
        // SAFETY: the driver library is loaded (checked in `open`).
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) };
        let mut cublas = 0i32;
        // SAFETY: the handle is live.
        unsafe { blas::cublasGetVersion_v2(*self.blas.handle(), &mut cublas) };
        let kernel_module = std::fs::read_to_string("/proc/driver/nvidia/version")
            .ok()
            .and_then(|t| {
                let w: Vec<&str> = t.split_whitespace().collect();
                w.iter()
                    .position(|x| *x == "Module")
                    .and_then(|i| w.get(i + 1))
                    .map(|s| s.to_string())
            });
        let cc = self.ctx.compute_capability().unwrap_or((0, 0));
        Meta {
            device: self.ctx.name().unwrap_or_else(|_| "unknown GPU".into()),
            backend: "cuda".into(),
            driver: kernel_module,
            cuda: Some(format!(
                "{}.{} (driver API)",
                driver / 1000,
                driver % 1000 / 10
            )),
            cublas: Some(version(cublas, 10000, 100)),
            nccl: self
                .nccl
                .as_ref()
                .and_then(|_| cudarc::nccl::result::get_nccl_version().ok())
                .map(|v| version(v, 10000, 100)),
            date: Some(super::today()),
            notes: Some(format!(
                "cuBLAS cublasGemmEx TN, fp32 accumulation, on GPU 0 (compute capability {}.{}); \
                 copies by cuMemcpyDtoD; NCCL collectives on float32 buffers. fp8 GEMMs are not \
                 probed (they need cublasLt).",
                cc.0, cc.1
            )),
            ..Default::default()
        }
    }

    fn devices(&self) -> u64 {
        self.devices
    }

    fn nodes(&self) -> (u64, u64) {
        self.nccl.as_ref().map_or((1, 0), Nccl::nodes)
    }

    fn gemm_dtypes(&self) -> Vec<Dtype> {
        vec![Dtype::Bf16, Dtype::Fp16]
    }

    fn max_gemm_bytes(&self) -> f64 {
        // A third of the free memory: the operands plus cuBLAS workspace and the copy and
        // NCCL buffers stay well inside the device.
        self.ctx
            .mem_get_info()
            .map_or(1e9, |(free, _)| free as f64 / 3.0)
    }

    fn max_message_bytes(&self) -> f64 {
        self.max_message_bytes
    }

    fn gemm(&mut self, dtype: Dtype, m: u64, n: u64, k: u64, iters: u32) -> Result<f64, ExecError> {
        let ty = match dtype {
            Dtype::Bf16 => blas::cudaDataType::CUDA_R_16BF,
            Dtype::Fp16 => blas::cudaDataType::CUDA_R_16F,
            other => {
                return Err(ExecError::Config(format!(
                    "cuda backend: no {other} GEMM probe"
                )));
            }
        };
        // cuBLAS works on the current context: NCCL set-up may have left another GPU's.
        self.ctx
            .bind_to_thread()
            .map_err(|e| device_err("cuCtxSetCurrent", e))?;
        self.gemm_buffers(m, n, k)?;
        let g = self.gemm.as_mut().expect("buffers just made");
        // Raw pointers (event tracking is off, so the guards record nothing).
        let a = g.a.device_ptr(&self.stream).0;
        let b = g.b.device_ptr(&self.stream).0;
        let c = g.c.device_ptr_mut(&self.stream).0;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let handle = *self.blas.handle();
        let (mi, ni, ki) = (m as i32, n as i32, k as i32);
        let call = || {
            // SAFETY: a holds ≥ k·m, b ≥ k·n, c ≥ m·n 16-bit elements on this stream's device;
            // C = op(A)·B with op(A) = Aᵀ (TN, the nn.Linear forward layout).
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    handle,
                    blas::cublasOperation_t::CUBLAS_OP_T,
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    mi,
                    ni,
                    ki,
                    (&alpha as *const f32).cast(),
                    a as *const _,
                    ty,
                    ki,
                    b as *const _,
                    ty,
                    ki,
                    (&beta as *const f32).cast(),
                    c as *mut _,
                    ty,
                    mi,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
                )
            }
            .map_err(|e| device_err(&format!("cublasGemmEx {m}x{n}x{k} {dtype}"), e))
        };
        self.timed(iters, call)
    }

    fn copy(&mut self, bytes: f64, iters: u32) -> Result<f64, ExecError> {
        let n = bytes as usize;
        self.ctx
            .bind_to_thread()
            .map_err(|e| device_err("cuCtxSetCurrent", e))?;
        if self.copy.as_ref().is_none_or(|(s, _)| s.len() < n) {
            self.copy = None;
            let stream = self.stream.clone();
            let alloc = || {
                stream
                    .alloc_zeros::<u8>(n)
                    .map_err(|e| device_err("cuMemAlloc", e))
            };
            self.copy = Some((alloc()?, alloc()?));
        }
        let (src, dst) = self.copy.as_mut().expect("buffers just made");
        let s = src.device_ptr(&self.stream).0;
        let d = dst.device_ptr_mut(&self.stream).0;
        let cu = self.stream.cu_stream();
        let call = || {
            // SAFETY: both buffers hold ≥ n bytes on this stream's device.
            unsafe { cudarc::driver::result::memcpy_dtod_async(d, s, n, cu) }
                .map_err(|e| device_err("cuMemcpyDtoDAsync", e))
        };
        self.timed(iters, call)
    }

    fn collective(
        &mut self,
        coll: Coll,
        ranks: u64,
        span: Span,
        bytes: f64,
        iters: u32,
    ) -> Result<f64, ExecError> {
        match self.nccl.as_mut() {
            Some(n) => n.run(coll, ranks, span, bytes, iters),
            None => Err(ExecError::Config(
                "cuda backend: collectives need 2 or more GPUs".into(),
            )),
        }
    }
}
