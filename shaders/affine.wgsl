// x ↦ a·x + b over a storage buffer: the smallest compute kernel, used to prove that WGSL
// compiles and runs on an adapter (crates/web/src/gpu.rs, tested in headless Chromium).
struct Params { a: f32, b: f32 }
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&data)) {
        data[id.x] = params.a * data[id.x] + params.b;
    }
}
