#!/usr/bin/env python3
"""PyTorch reference for `makd bench train`: the same student, loss, optimizer, batch and image
size on random data, with 2 CPU threads; prints one JSON object with the same keys.

    python3 bench/torch_train.py --model resnet18 --batch 32 --size 32 --json

Models match makd's student zoo layer for layer (src/student/):
  cnn           features.{0,1,2} = conv3x3 (no bias) - BN - ReLU with widths 32/64/128, a 2x2
                max-pool after the first two, global average pool, fc Linear(128, C+Q)
  resnet18/34/50   torchvision's resnets; up to 64 px with the small-image stem makd uses: conv1
                  3x3 stride 1 (no bias) and no max-pool (CIFAR style); above 64 px unchanged
  mobilenet-v1    Howard et al. Table 1 as makd builds it (torchvision has none): 3x3/2 conv to 32,
                  13 depthwise-separable blocks (dw3x3-BN-ReLU, pw1x1-BN-ReLU), avg pool, fc
  mobilenet-v2    torchvision's mobilenet_v2
  efficientnet-b0 torchvision's efficientnet_b0 (its stochastic depth included: PyTorch's default)
The MobileNets and EfficientNet get the small stem (first conv at stride 1) up to 64 px, as in makd.
Loss: CE(class logits) + 4 * BCE-with-logits(aspect logits, soft targets), both means.
Optimizer: SGD lr 0.01, momentum 0.9, weight decay 1e-4 (makd's defaults).
--eval times inference instead: model.eval() under torch.no_grad(), forward only.
"""

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCnn(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        widths = [32, 64, 128]
        layers = []
        c = in_channels
        for w in widths:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(c, w, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                )
            )
            c = w
        self.features = nn.ModuleList(layers)
        self.fc = nn.Linear(c, num_outputs)

    def forward(self, x):
        last = len(self.features) - 1
        for i, block in enumerate(self.features):
            x = block(x)
            if i < last:
                x = F.max_pool2d(x, 2, 2)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
    (1024, 2),
    (1024, 1),
]


def conv_bn_relu(c_in, c_out, k, stride, groups):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, stem_stride: int):
        super().__init__()
        layers = [conv_bn_relu(in_channels, 32, 3, stem_stride, 1)]
        c = 32
        for c_out, stride in V1_BLOCKS:
            layers.append(
                nn.Sequential(conv_bn_relu(c, c, 3, stride, c), conv_bn_relu(c, c_out, 1, 1, 1))
            )
            c = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_outputs)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def first_conv(in_channels, old, small):
    return nn.Conv2d(in_channels, old.out_channels, 3, 1 if small else 2, 1, bias=False)


def build(model: str, in_channels: int, num_outputs: int, size: int) -> nn.Module:
    import torchvision

    small = size <= 64  # makd's Stem::Auto
    if model == "cnn":
        return SmallCnn(in_channels, num_outputs)
    if model in ("resnet18", "resnet34", "resnet50"):
        m = getattr(torchvision.models, model)(num_classes=num_outputs)
        if small:
            m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            m.maxpool = nn.Identity()
        elif in_channels != 3:
            m.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        return m
    if model == "mobilenet-v1":
        return MobileNetV1(in_channels, num_outputs, 1 if small else 2)
    if model in ("mobilenet-v2", "efficientnet-b0"):
        make = {"mobilenet-v2": torchvision.models.mobilenet_v2,
                "efficientnet-b0": torchvision.models.efficientnet_b0}[model]
        m = make(num_classes=num_outputs)
        if small or in_channels != 3:
            m.features[0][0] = first_conv(in_channels, m.features[0][0], small)
        return m
    raise SystemExit(
        f"unknown model {model}; use cnn, resnet18, resnet34, resnet50, mobilenet-v1, "
        "mobilenet-v2 or efficientnet-b0"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--aspects", type=int, default=50)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval", action="store_true", help="time inference: eval mode, no_grad")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build(a.model, a.channels, a.classes + a.aspects, a.size)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    xs = torch.randn(a.batch, a.channels, a.size, a.size)
    ys = torch.arange(a.batch) % a.classes
    targets = torch.rand(a.batch, a.aspects)

    if a.eval:
        model.eval()

    def infer():
        with torch.no_grad():
            return model(xs).sum().item()

    def train_step():
        logits = model(xs)
        total = F.cross_entropy(logits[:, : a.classes], ys)
        if a.aspects > 0:
            total = total + 4.0 * F.binary_cross_entropy_with_logits(
                logits[:, a.classes :], targets
            )
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return total.item()

    step = infer if a.eval else train_step
    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    # ru_maxrss is in KiB on Linux, the same figure as makd's VmHWM.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "impl": "pytorch",
        "mode": "eval" if a.eval else "train",
        "torch": torch.__version__,
        "model": a.model,
        "batch": a.batch,
        "size": a.size,
        "channels": a.channels,
        "classes": a.classes,
        "aspects": a.aspects,
        "steps": a.steps,
        "threads": torch.get_num_threads(),
        "ms_per_step": median * 1e3,
        "images_per_s": a.batch / median,
        "peak_rss_mb": rss,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(
            f"{a.model} {'eval' if a.eval else 'train'} batch {a.batch} {a.size}px: {median * 1e3:.1f} ms/step, "
            f"{a.batch / median:.1f} images/s (median of {a.steps}), peak RSS {rss:.0f} MB"
        )


if __name__ == "__main__":
    main()
