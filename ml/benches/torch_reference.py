#!/usr/bin/env python3
"""PyTorch reference for ml/benches/train.rs: the same MLP and CNN, the same
optimiser (AdamW lr 1e-3, weight decay 1e-4), batch size, epochs and data
(Fashion-MNIST, partition-sized and full), on the CPU.

Usage: python3 ml/benches/torch_reference.py [DATA_DIR] [case ...]
  cases: mlp-6k mlp-60k cnn-6k cnn-60k (default: all)
  env:   PATE_BENCH_EPOCHS (default 10), PATE_BENCH_BATCH (default 64),
         TORCH_THREADS (default 2)

The 6k cases take the first 6000 items of a seeded permutation (numpy's, so
not the exact items of the Rust partition; the speed does not depend on it).
"""
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch
from torch import nn


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir):
    def f(name):
        for cand in (name + ".gz", name):
            p = os.path.join(data_dir, cand)
            if os.path.exists(p):
                return read_idx(p)
        raise FileNotFoundError(name)

    return (
        f("train-images-idx3-ubyte"),
        f("train-labels-idx1-ubyte"),
        f("t10k-images-idx3-ubyte"),
        f("t10k-labels-idx1-ubyte"),
    )


def mlp(classes=10):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, classes)
    )


def cnn(classes=10):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, classes),
    )


def main():
    args = sys.argv[1:]
    data_dir = "/usr/share/datasets/fashion-mnist"
    if args and os.path.isdir(args[0]):
        data_dir = args.pop(0)
    cases = args or ["mlp-6k", "mlp-60k", "cnn-6k", "cnn-60k"]
    epochs = int(os.environ.get("PATE_BENCH_EPOCHS", "10"))
    batch = int(os.environ.get("PATE_BENCH_BATCH", "64"))
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    torch.manual_seed(0)
    xtr, ytr, xte, yte = load(data_dir)
    xte_t = torch.from_numpy(xte.astype(np.float32) / 255.0).unsqueeze(1)
    yte_t = torch.from_numpy(yte.astype(np.int64))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, epochs {epochs}, batch {batch}")
    print("| case | items | epochs | train time (s) | train samples/s | test accuracy | inference samples/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        kind, size = case.split("-")
        idx = np.random.default_rng(0).permutation(len(ytr))[: 6000 if size == "6k" else len(ytr)]
        x = torch.from_numpy(xtr[idx].astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(ytr[idx].astype(np.int64))
        model = mlp() if kind == "mlp" else cnn()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_fn = nn.CrossEntropyLoss()
        g = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), batch):
                b = perm[i : i + batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[b]), y[b])
                loss.backward()
                opt.step()
        secs = time.perf_counter() - start
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = torch.cat([model(xte_t[i : i + 1000]).argmax(1) for i in range(0, len(yte_t), 1000)])
        infer = len(yte_t) / (time.perf_counter() - t0)
        acc = (pred == yte_t).float().mean().item()
        print(f"| {case} | {len(y)} | {epochs} | {secs:.1f} | {len(y) * epochs / secs:.0f} | {acc:.4f} | {infer:.0f} |", flush=True)


if __name__ == "__main__":
    main()
