#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench engine`: the same mid-size UNet, the same weights (the
folder `engine_bench write-mid` wrote), the same inputs' shapes; ms per forward on this CPU.

    python unet_torch.py DIR --sizes 32,64 --runs 3
prints one JSON line per latent size, like engine_bench.
"""

import argparse
import json
import os
import time

import torch
from diffusers import UNet2DConditionModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--sizes", default="32,64")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    unet = UNet2DConditionModel.from_pretrained(a.dir, subfolder="unet").eval()
    params = sum(p.numel() for p in unet.parameters())
    g = torch.Generator().manual_seed(0)
    for size in [int(s) for s in a.sizes.split(",")]:
        sample = torch.rand(2, 9, size, size, generator=g) * 2 - 1
        context = torch.rand(2, 77, 512, generator=g) * 2 - 1
        added = {"text_embeds": torch.rand(2, 256, generator=g) * 2 - 1,
                 "time_ids": torch.tensor([[size * 8.0, size * 8.0, 0, 0, size * 8.0, size * 8.0]] * 2)}
        times = []
        with torch.inference_mode():
            for run in range(a.runs + 1):
                t = time.perf_counter()
                unet(sample, 500, encoder_hidden_states=context, added_cond_kwargs=added)
                ms = (time.perf_counter() - t) * 1000
                if run > 0:
                    times.append(ms)
        times.sort()
        print(json.dumps({"device": "pytorch-cpu", "precision": "f32", "size": size, "params": params,
                          "ms": round(times[len(times) // 2], 1), "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
