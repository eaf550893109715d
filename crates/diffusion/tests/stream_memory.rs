#![cfg(not(target_arch = "wasm32"))]
//! A checkpoint is never held whole in memory: streaming a 72 MiB safetensors file from disk, the
//! process's heap grows by about one tensor (its bytes and their conversion), not by the file.
//! Measured with a counting global allocator, so every Rust allocation is seen.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fresco_diffusion::weights::WeightsError;
use fresco_diffusion::weights::convert::to_f32;
use fresco_diffusion::weights::safetensors::{self, Dtype, SafetensorsStream};
use fresco_diffusion::weights::store::READ_CHUNK;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1 << 20;

#[test]
fn streaming_a_checkpoint_holds_one_tensor_at_a_time() {
    // 64 tensors of 1 MiB and one of 8 MiB, f16: 72 MiB on disk.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    {
        let halves = |n: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|i| half::f16::from_f32((i % 97) as f32 / 97.0).to_le_bytes())
                .collect()
        };
        let small = halves(MIB / 2);
        let big = halves(4 * MIB);
        let names: Vec<String> = (0..64).map(|i| format!("layers.{i}.weight")).collect();
        let mut list: Vec<(&str, Dtype, &[usize], &[u8])> = Vec::new();
        let small_shape = [MIB / 2];
        let big_shape = [4 * MIB];
        for n in &names {
            list.push((n.as_str(), Dtype::F16, &small_shape, &small));
        }
        list.insert(32, ("big.weight", Dtype::F16, &big_shape, &big));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        safetensors::write(&list, &mut f).unwrap();
    }
    let file_size = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(file_size > 72 * MIB);

    let baseline = CURRENT.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let mut seen = 0usize;
    let mut checksum = 0f64;
    {
        use std::io::Read;
        let mut file = std::fs::File::open(&path).unwrap();
        let mut stream = SafetensorsStream::new("big.safetensors");
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            // As the device store does: convert to f32, hand over, free, before reading on.
            stream
                .feed(&buf[..n], &mut |t| {
                    let values = to_f32(&t.bytes, t.info.dtype);
                    checksum += values.iter().step_by(4096).map(|v| *v as f64).sum::<f64>();
                    seen += 1;
                    Ok::<_, WeightsError>(())
                })
                .unwrap();
        }
        stream.finish().unwrap();
    }
    let peak = PEAK.load(Ordering::SeqCst) - baseline;
    assert_eq!(seen, 65);
    assert!(checksum.is_finite());
    // The largest tensor (8 MiB), its f32 conversion (16 MiB), the read buffer (1 MiB), the header.
    let bound = 8 * MIB + 16 * MIB + READ_CHUNK + MIB;
    println!(
        "peak heap growth while streaming {} MiB: {:.1} MiB (bound {} MiB)",
        file_size / MIB,
        peak as f64 / MIB as f64,
        bound / MIB
    );
    assert!(
        peak <= bound,
        "peak {peak} bytes over baseline exceeds {bound}"
    );
    assert!(
        peak < file_size / 2,
        "streaming must not approach the file size"
    );
}
