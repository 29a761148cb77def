#!/usr/bin/env python3
"""PyTorch's timings for the convolution shapes of `examples/kernels_bench.rs` (forward, and
forward + backward of input and weight through autograd with `sum().backward()`), 2 threads.

    python3 bench/torch_conv.py --size 32 --batch 32
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

# name, C_in, C_out, side at 32 px, kernel, stride, groups (same list as kernels_bench.rs)
LAYERS = [
    ("r18 conv1 3→64", 3, 64, 32, 3, 1, 1),
    ("r18 layer1 64→64", 64, 64, 32, 3, 1, 1),
    ("r18 layer2.0 64→128/2", 64, 128, 32, 3, 2, 1),
    ("r18 layer2 128→128", 128, 128, 16, 3, 1, 1),
    ("r18 layer2 ds 1×1/2", 64, 128, 32, 1, 2, 1),
    ("r18 layer3 256→256", 256, 256, 8, 3, 1, 1),
    ("r18 layer4 512→512", 512, 512, 4, 3, 1, 1),
    ("mv2 dw 96 3×3", 96, 96, 16, 3, 1, 96),
    ("mv2 dw 144 3×3/2", 144, 144, 16, 3, 2, 144),
    ("mv2 pw 144→24", 144, 24, 16, 1, 1, 1),
    ("mv2 pw 24→144", 24, 144, 16, 1, 1, 1),
]


def median_time(reps, f):
    f()
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return statistics.median(t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{'layer':<24} {'fwd ms':>9} {'f+b ms':>9} {'GF/s':>7}")
    total, total_flops = 0.0, 0.0
    for name, c, o, hw, k, s, g in LAYERS:
        if a.only and a.only not in name:
            continue
        hw = hw * a.size // 32
        pad = (k - 1) // 2
        x = torch.randn(a.batch, c, hw, hw, requires_grad=True)
        w = (0.1 * torch.randn(o, c // g, k, k)).requires_grad_()
        with torch.no_grad():
            fwd = median_time(a.reps, lambda: F.conv2d(x, w, None, s, pad, 1, g))

        def both():
            x.grad = None
            w.grad = None
            F.conv2d(x, w, None, s, pad, 1, g).sum().backward()

        fb = median_time(a.reps, both)
        oh = (hw + 2 * pad - k) // s + 1
        flops = 3 * 2 * a.batch * o * oh * oh * (c // g) * k * k
        total += fb
        total_flops += flops
        print(f"{name:<24} {fwd * 1e3:>9.2f} {fb * 1e3:>9.2f} {flops / fb / 1e9:>7.1f}")
    print(f"\ntotal fwd+bwd: {total * 1e3:.1f} ms ({total_flops / total / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
