#!/usr/bin/env python3
"""diffusers' side of `cargo xtask bench pipeline`: the same model folder, inputs, prompt, steps
and sizes as `engine_bench pipeline`; seconds per whole inpainting on this CPU (float32).

    python pipeline_torch.py MODEL_DIR --sizes 32,64 --steps 10 --runs 2
prints one JSON line per size, like engine_bench.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
from PIL import Image
from diffusers import DiffusionPipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines"
PROMPT = "a red fox sitting in fresh snow, photo"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--sizes", default="32,64")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--runs", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    pipe = DiffusionPipeline.from_pretrained(a.model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(FIXTURES / "image32.png")
    mask = Image.open(FIXTURES / "mask32.png")
    for size in [int(s) for s in a.sizes.split(",")]:
        times = []
        with torch.inference_mode():
            for run in range(a.runs + 1):
                t = time.perf_counter()
                pipe(prompt=PROMPT, image=image, mask_image=mask, height=size, width=size,
                     num_inference_steps=a.steps, generator=torch.Generator().manual_seed(0))
                secs = time.perf_counter() - t
                if run > 0:
                    times.append(secs)
        times.sort()
        print(json.dumps({"device": "diffusers-cpu", "size": size, "steps": a.steps,
                          "seconds": round(times[len(times) // 2], 3),
                          "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
