//! What the browser's WebGPU adapter can do, and a proof that compute works on it.
//!
//! The local engine chooses f16 or f32 and checks that a model fits from these capabilities
//! (`shader-f16`, the buffer limits), before it downloads a single weight.

use serde::Serialize;
use wgpu::util::DeviceExt;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "WebGPU is not available in this browser (navigator.gpu is missing or no adapter was found): {0}"
    )]
    NoAdapter(String),
    #[error("the WebGPU adapter refused to create a device: {0}")]
    NoDevice(String),
    #[error("reading a GPU buffer back failed: {0}")]
    Readback(String),
}

/// The adapter's identity and the limits the engine cares about.
#[derive(Debug, Clone, Serialize)]
pub struct GpuCapabilities {
    pub name: String,
    pub vendor: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu` (SwiftShader), …
    pub device_type: String,
    pub backend: String,
    /// Half-precision arithmetic in shaders (`shader-f16`): weights can be stored and computed in
    /// f16. SwiftShader, the CPU adapter of headless Chromium, does not have it.
    pub shader_f16: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_invocations_per_workgroup: u32,
}

/// A WebGPU device and its queue.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub capabilities: GpuCapabilities,
}

impl Gpu {
    /// Opens the browser's default WebGPU adapter with its own limits.
    pub async fn open() -> Result<Self, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::BROWSER_WEBGPU,
            flags: wgpu::InstanceFlags::default(),
            memory_budget_thresholds: Default::default(),
            backend_options: Default::default(),
            display: None,
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        let shader_f16 = features.contains(wgpu::Features::SHADER_F16);
        let capabilities = GpuCapabilities {
            name: info.name,
            vendor: info.vendor.to_string(),
            device_type: format!("{:?}", info.device_type),
            backend: format!("{:?}", info.backend),
            shader_f16,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
            max_compute_workgroup_size_x: limits.max_compute_workgroup_size_x,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        };
        let required_features = if shader_f16 {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("fresco"),
                required_features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoDevice(e.to_string()))?;
        Ok(Gpu {
            device,
            queue,
            capabilities,
        })
    }

    /// Runs one compute pass over `data` (`x ↦ a·x + b` on every element) and reads the result
    /// back: the smallest end-to-end proof that shaders compile and run on this adapter.
    pub async fn affine(&self, data: &[f32], a: f32, b: f32) -> Result<Vec<f32>, GpuError> {
        let shader = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("affine"),
                source: wgpu::ShaderSource::Wgsl(AFFINE_WGSL.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("affine"),
                layout: None,
                module: &shader,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let size = bytes.len() as u64;
        let storage = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("data"),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            });
        let params: Vec<u8> = [a, b].iter().flat_map(|x| x.to_le_bytes()).collect();
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &params,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("affine"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: storage.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: uniform.as_entire_binding(),
                },
            ],
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("affine"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("affine"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups((data.len() as u32).div_ceil(64), 1, 1);
        }
        encoder.copy_buffer_to_buffer(&storage, 0, &readback, 0, size);
        self.queue.submit([encoder.finish()]);

        let (tx, rx) = futures_channel::oneshot::channel();
        readback.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .map_err(|_| GpuError::Readback("the mapping callback never ran".into()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let out = {
            let view = readback
                .slice(..)
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            view.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        readback.unmap();
        Ok(out)
    }
}

const AFFINE_WGSL: &str = include_str!("../../../shaders/affine.wgsl");
