#!/usr/bin/env python3
"""diffusers' side of `cargo xtask bench real` and `bench gpu`: one inpainting from a real-layout
checkpoint (`cargo xtask fixtures real`), on this CPU in float32 (its fp16 files widened as ours
are) or with `--device cuda --dtype fp16` on a GPU, with the same inputs, prompt, seed (a CPU
generator, as ours draws torch's CPU stream), steps and size as `engine_bench real`, timed phase by
phase (on CUDA each mark waits for the device).

    python real_torch.py MODEL_DIR --size 512 --steps 3 --out diffusers.png
    python real_torch.py MODEL_DIR --device cuda --dtype fp16 --steps 30

prints one JSON line: load, text (encode_prompt), encode_image (prepare_latents: the image's VAE
encode and the noise), encode_masked (the mask and prepare_mask_latents: the masked image's VAE
encode), first_step, step (the median of the others), steps, decode (vae.decode), total (the whole
call), peak_rss_mib (this process's peak resident memory) and, on CUDA, peak_device_mib (the most
PyTorch's allocator reserved on the device, as ours reports its pools' reservation).
"""

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch
from PIL import Image
from diffusers import DiffusionPipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines"
# engine_bench's BENCH_PROMPT.
PROMPT = "a red fox sitting in fresh snow, photo"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--variant", default="fp16")
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="fp32", help="fp32 or fp16 (fp16 on CUDA only)")
    a = p.parse_args()
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[a.dtype]
    cuda = a.device == "cuda"
    if dtype == torch.float16 and not cuda:
        raise SystemExit("--dtype fp16 needs --device cuda")
    torch.set_num_threads(os.cpu_count() or 1)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    index = json.loads((Path(a.model) / "model_index.json").read_text())
    extra = {}
    # The real SD1.5-inpainting lists a safety checker; the fixture, like fal, has none.
    for name in ("safety_checker", "feature_extractor"):
        if name in index:
            extra[name] = None
    t = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(
        a.model, torch_dtype=dtype, variant=a.variant, **extra
    ).to(a.device)
    sync()
    load = time.perf_counter() - t
    pipe.set_progress_bar_config(disable=True)

    marks = {}

    def marked(name, fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            sync()
            marks[name] = time.perf_counter()
            return out

        return wrapper

    pipe.encode_prompt = marked("text", pipe.encode_prompt)
    pipe.prepare_latents = marked("latents", pipe.prepare_latents)
    pipe.prepare_mask_latents = marked("masked", pipe.prepare_mask_latents)
    pipe.vae.decode = marked("decoded", pipe.vae.decode)
    steps = []

    def on_step(pipe_, i, t_, kwargs):
        sync()
        steps.append(time.perf_counter())
        return kwargs

    image = Image.open(FIXTURES / "image32.png")
    mask = Image.open(FIXTURES / "mask32.png")
    size = {"height": a.size, "width": a.size} if a.size else {}
    with torch.inference_mode():
        start = time.perf_counter()
        out = pipe(
            prompt=PROMPT,
            image=image,
            mask_image=mask,
            num_inference_steps=a.steps,
            generator=torch.Generator().manual_seed(0),
            callback_on_step_end=on_step,
            **size,
        ).images[0]
        sync()
        total = time.perf_counter() - start
    if a.out:
        out.save(a.out)
    step_times = []
    last = marks["masked"]
    for m in steps:
        step_times.append(m - last)
        last = m
    # The median of the steps after the first (which carries first-use work).
    ordered = sorted(step_times[1:]) or [float("nan")]
    print(
        json.dumps(
            {
                "size": out.width,
                "load": round(load, 3),
                "text": round(marks["text"] - start, 3),
                "encode_image": round(marks["latents"] - marks["text"], 3),
                "encode_masked": round(marks["masked"] - marks["latents"], 3),
                "first_step": round(step_times[0], 3),
                "step": round(ordered[len(ordered) // 2], 3),
                "steps": len(step_times),
                "decode": round(marks["decoded"] - last, 3),
                "total": round(total, 3),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "threads": torch.get_num_threads(),
                "device": torch.cuda.get_device_name() if cuda else "cpu",
                "precision": a.dtype,
                **(
                    {"peak_device_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
                    if cuda
                    else {}
                ),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
