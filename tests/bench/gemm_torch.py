#!/usr/bin/env python3
"""PyTorch's side of `engine_bench gemm`: GFLOP/s of `F.linear` (MKL on x86) on the same
(m, k, n) shapes, x of m × k times a weight of n × k, on this CPU's cores (or `--threads N`).

    python gemm_torch.py [--threads 1]
prints one line per shape, like engine_bench.
"""

import argparse
import os
import time

import torch

SHAPES = [
    (512, 256, 256),
    (512, 256, 2048),
    (512, 1024, 256),
    (2048, 128, 128),
    (2048, 128, 1024),
    (2048, 2048, 2048),
    # SDXL at 1024², guidance's batch of 2: level 2's projections, GEGLU up and down, level 1's
    # projections.
    (2048, 1280, 1280),
    (2048, 1280, 10240),
    (2048, 5120, 1280),
    (8192, 640, 640),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with torch.inference_mode():
        for m, k, n in SHAPES:
            x, w = torch.randn(m, k), torch.randn(n, k)
            torch.nn.functional.linear(x, w)
            start, runs = time.perf_counter(), 0
            while time.perf_counter() - start < 0.5:
                torch.nn.functional.linear(x, w)
                runs += 1
            dt = (time.perf_counter() - start) / runs
            print(f"{m} {k} {n} torch linear {2 * m * k * n / dt / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
