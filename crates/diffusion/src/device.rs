//! Where a model runs: choosing and opening a device — the CPU (burn-flex), wgpu natively
//! (Vulkan, Metal, DX12), the browser's WebGPU — its precision, the largest buffer it binds, and,
//! in a browser, its loss. The CLI, the server, the benchmarks and the browser's engine all open
//! their device here.

use burn::tensor::{Device, FloatDType};

use crate::weights::store::Precision;

/// Whether `device` is the CPU device (burn-flex), whose layers take the engine's own kernels.
#[cfg(not(target_arch = "wasm32"))]
pub fn is_cpu(device: &Device) -> bool {
    *device == Device::flex()
}

/// Whether `device` is the CPU device: never, in a browser.
#[cfg(target_arch = "wasm32")]
pub fn is_cpu(_: &Device) -> bool {
    false
}

/// The precision to run a model in on `device`: f16 where the device computes it natively (a
/// GPU adapter with `shader-f16`), f32 elsewhere (CPUs, SwiftShader in headless Chromium).
pub fn preferred_precision(device: &Device) -> Precision {
    if !is_cpu(device) && device.supports_dtype(FloatDType::F16) {
        Precision::F16
    } else {
        Precision::F32
    }
}

/// A wgpu device's largest usable buffer: the largest storage buffer it binds, or its largest
/// buffer if that is smaller. A tensor larger than this cannot be used on it.
pub fn wgpu_buffer_limit(limits: &burn::tensor::wgpu::wgpu::Limits) -> u64 {
    limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
}

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("the CPU backend computes in f32: f16 needs a GPU (wgpu)")]
    F16OnCpu,
    #[error("no usable wgpu adapter: {0}")]
    NoAdapter(String),
    #[error("this wgpu adapter has no shader-f16")]
    NoF16,
}

/// A device opened for a model: the Burn device, the precision to run in, and the largest buffer
/// the device binds (a GPU's limit; `None` on the CPU).
#[derive(Debug, Clone)]
pub struct Compute {
    pub device: Device,
    pub precision: Precision,
    pub buffer_limit: Option<u64>,
    /// What runs it, for logs and benchmark tables: `cpu (burn-flex)`, or the wgpu adapter's name
    /// and API, e.g. `NVIDIA H100 80GB HBM3 (Vulkan)`.
    pub adapter: String,
}

/// The backends a native program can ask for.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// burn-flex with the engine's kernels, in f32.
    Cpu,
    /// The default wgpu adapter (a GPU where there is one).
    Wgpu,
}

/// Opens `backend`, in f16 when `f16` (a GPU with `shader-f16` only), else in f32.
#[cfg(not(target_arch = "wasm32"))]
pub fn open(backend: Backend, f16: bool) -> Result<Compute, DeviceError> {
    match (backend, f16) {
        (Backend::Cpu, false) => Ok(Compute {
            device: Device::flex(),
            precision: Precision::F32,
            buffer_limit: None,
            adapter: "cpu (burn-flex)".into(),
        }),
        (Backend::Cpu, true) => Err(DeviceError::F16OnCpu),
        (Backend::Wgpu, f16) => {
            let (device, setup) = Device::wgpu_options()
                .device_kind(burn::tensor::DeviceKind::DefaultDevice)
                .init_with_setup()
                .map_err(|e| DeviceError::NoAdapter(e.to_string()))?;
            if f16 && !device.supports_dtype(FloatDType::F16) {
                return Err(DeviceError::NoF16);
            }
            Ok(Compute {
                device,
                precision: if f16 { Precision::F16 } else { Precision::F32 },
                buffer_limit: Some(wgpu_buffer_limit(&setup.device.limits())),
                adapter: {
                    let info = setup.adapter.get_info();
                    format!("{} ({:?})", info.name, info.backend)
                },
            })
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use browser::*;

/// The browser's WebGPU device: opened once per worker, its limits, its loss.
#[cfg(target_arch = "wasm32")]
mod browser {
    use std::rc::Rc;

    use burn::tensor::Device;
    use burn::tensor::wgpu::wgpu;

    use super::wgpu_buffer_limit;
    use crate::weights::WeightsError;

    /// What the engine must know of the WebGPU device Burn opened: whether it computes in f16, and
    /// the largest buffer it can bind (a tensor larger than that cannot be used on it).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct GpuLimits {
        pub shader_f16: bool,
        /// [`wgpu_buffer_limit`] of the device.
        pub buffer_limit: u64,
    }

    thread_local! {
        /// Burn registers one runtime per adapter: the device is initialised once per page (or
        /// worker) and handed out again after that.
        static WEBGPU: std::cell::RefCell<Option<(Device, GpuLimits)>> =
            const { std::cell::RefCell::new(None) };
    }

    unsafe extern "C" {
        /// Synthesised by wasm-ld: runs the module's static constructors (its `.init_array`), here
        /// the `inventory` registrations of CubeCL's IR dialects (pliron), before Burn compiles a
        /// kernel.
        fn __wasm_call_ctors();
    }

    /// Runs the static constructors, once per wasm instance.
    ///
    /// When no code calls `__wasm_call_ctors`, wasm-ld treats the module as a "command" and wraps
    /// every export in a call to it, so the constructors (hundreds of registrations) ran again on
    /// each call from JavaScript into the module — each `externref` the WebGPU bindings hand over,
    /// several per kernel launch: most of a denoising step's time in the browser. Calling it here
    /// turns that off; this runs before Burn touches the device, the first use of the registries.
    fn run_static_constructors() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static DONE: AtomicBool = AtomicBool::new(false);
        if !DONE.swap(true, Ordering::Relaxed) {
            // SAFETY: wasm-ld defines the symbol; the flag makes this the only call in this instance.
            unsafe { __wasm_call_ctors() }
        }
    }

    /// Burn on the browser's WebGPU adapter, initialised on the first call and shared after it,
    /// with the device's limits.
    pub async fn webgpu() -> Result<(Device, GpuLimits), WeightsError> {
        if let Some(known) = WEBGPU.with(|d| d.borrow().clone()) {
            return Ok(known);
        }
        run_static_constructors();
        let (device, setup) = Device::wgpu_options()
            .init_with_setup_async()
            .await
            .map_err(|e| WeightsError::Config(format!("WebGPU is not available: {e}")))?;
        let limits = GpuLimits {
            shader_f16: setup.device.features().contains(wgpu::Features::SHADER_F16),
            buffer_limit: wgpu_buffer_limit(&setup.device.limits()),
        };
        // Burn stops using a lost device (its reads then fail as "poisoned"); this one tells the
        // engine at once, even while no call runs, so it can open a new device for the next call.
        setup.device.set_device_lost_callback(|reason, message| {
            let reason = match reason {
                wgpu::DeviceLostReason::Destroyed => format!("destroyed: {message}"),
                _ => message,
            };
            LOST.with(|l| *l.borrow_mut() = Some(reason.clone()));
            if let Some(listener) = LOST_LISTENER.with(|l| l.borrow().clone()) {
                listener(&reason);
            }
        });
        WEBGPU.with(|d| *d.borrow_mut() = Some((device.clone(), limits)));
        Ok((device, limits))
    }

    type LostListener = Rc<dyn Fn(&str)>;

    thread_local! {
        /// Why the device was lost, once it was.
        static LOST: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
        static LOST_LISTENER: std::cell::RefCell<Option<LostListener>> =
            const { std::cell::RefCell::new(None) };
    }

    /// Why this worker's WebGPU device was lost, if it was. A lost device stays lost, and Burn keeps
    /// one device per worker: a new device means a new worker (a new wasm instance).
    pub fn device_lost() -> Option<String> {
        LOST.with(|l| l.borrow().clone())
    }

    /// Calls `listener` with the reason when the device is lost (GPU process crash, driver reset,
    /// `GPUDevice.destroy()`), whether or not a call is running.
    pub fn on_device_lost(listener: impl Fn(&str) + 'static) {
        LOST_LISTENER.with(|l| *l.borrow_mut() = Some(Rc::new(listener)));
    }

    /// Burn on the browser's WebGPU adapter ([`webgpu`] without the limits).
    pub async fn webgpu_device() -> Result<Device, WeightsError> {
        webgpu().await.map(|(device, _)| device)
    }
}
