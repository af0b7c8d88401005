#!/usr/bin/env python3
"""A single-process PyTorch PATE pipeline: the reference `pate lab --preset
fast` is timed against (scripts/bench.sh). Everything in one process, no
network, no ledger: the fastest a PyTorch user would write it.

The same configuration as the lab's fast preset (cli/src/lab/preset.rs):
  - teachers: 20 MLPs (784-256-128-10, ReLU), each on one of 20 disjoint
    partitions of the 60,000 training items, 10 epochs, batch 128, AdamW
    lr 1e-3 weight decay 1e-4 (pate_ml::train::TrainConfig::default());
  - the operator's noise-free ensemble on the evaluation set (the last
    1,000 test items), as the lab measures it;
  - LNMax: per query, the teachers' vote histogram plus discrete Laplace
    noise of scale b = 2 on every count (the lab draws OpenDP's integer
    Laplace: here the difference of two geometric draws, the same law),
    the argmax is the label;
  - 3,000 queries drawn from the public pool (the test split minus the
    evaluation set), asked 250 at a time;
  - the student: the same MLP, 40 epochs, batch 128, on the answered labels;
    its accuracy on the evaluation set.
Partitions and query picks come from numpy's seeded permutations, not the
lab's ChaCha8 ones: the same sizes, other items; speed does not depend on
which, accuracy within noise.

Usage: python3 ml/benches/torch_pate.py [DATA_DIR]
  env: TORCH_THREADS (default 2), PATE_TEACHERS_N (20), PATE_QUERIES (3000),
       PATE_TEACHER_EPOCHS (10), PATE_STUDENT_EPOCHS (40), PATE_BATCH (128),
       PATE_NOISE_SCALE (2), PATE_EVAL_SIZE (1000), PATE_SEED (0)
Prints one JSON object (wall seconds per phase and accuracies) on the last
line, after a readable summary.
"""
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import load, mlp  # noqa: E402  (same loader and layers)


def env(name, default, cast=int):
    return cast(os.environ.get(name, default))


def pate_split(data_dir, eval_size):
    """The lab's split: the training items (the teachers' private data), the
    public pool (the test split but its last `eval_size` items, labels as a
    numpy array for measuring) and the evaluation set, images as float
    [n, 1, 28, 28] in [0, 1]; and the class count."""
    xtr, ytr, xte, yte = load(data_dir)
    to_x = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)
    cut = len(yte) - eval_size
    return (to_x(xtr), torch.from_numpy(ytr.astype(np.int64)), to_x(xte[:cut]), yte[:cut],
            to_x(xte[cut:]), torch.from_numpy(yte[cut:].astype(np.int64)), int(max(ytr.max(), yte.max())) + 1)


def print_report(name, started, seconds, accuracies, **extra):
    """A summary line on stderr and one JSON object on stdout: the versions,
    `extra`, each phase's seconds and the total since `started`, and the
    accuracies (what scripts/bench.sh reads)."""
    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), **extra,
              **{k: round(v, 3) for k, v in seconds.items()},
              "total_seconds": round(time.perf_counter() - started, 3),
              **{k: round(v, 4) for k, v in accuracies.items()}}
    print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in report.items() if k.endswith(("seconds", "accuracy"))),
          file=sys.stderr)
    print(json.dumps(report), flush=True)


def fit(model, x, y, epochs, batch, seed):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            b = perm[i : i + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[b]), y[b]).backward()
            opt.step()
    model.eval()
    return model


def predict(model, x, batch=512):
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


def discrete_laplace(rng, scale, shape):
    # X - Y with X, Y geometric on {0, 1, ...} with success 1 - exp(-1/b):
    # P(k) proportional to exp(-|k| / b), the integer Laplace of scale b.
    p = 1.0 - np.exp(-1.0 / scale)
    return rng.geometric(p, shape) - rng.geometric(p, shape)


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    threads = env("TORCH_THREADS", "2")
    teachers = env("PATE_TEACHERS_N", "20")
    queries = env("PATE_QUERIES", "3000")
    t_epochs = env("PATE_TEACHER_EPOCHS", "10")
    s_epochs = env("PATE_STUDENT_EPOCHS", "40")
    batch = env("PATE_BATCH", "128")
    scale = env("PATE_NOISE_SCALE", "2", float)
    eval_size = env("PATE_EVAL_SIZE", "1000")
    query_batch = 250
    seed = env("PATE_SEED", "0")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()

    x_train, y_train, x_pool, y_pool, x_eval, y_eval, classes = pate_split(data_dir, eval_size)
    load_seconds = time.perf_counter() - started

    # 1. Teachers, one after another (one process, the threads shared).
    t = time.perf_counter()
    perm = np.random.default_rng(seed).permutation(len(y_train))
    parts = np.array_split(perm, teachers)
    models = []
    for i, idx in enumerate(parts):
        torch.manual_seed(seed + i)
        idx = torch.from_numpy(idx)
        models.append(fit(mlp(classes), x_train[idx], y_train[idx], t_epochs, batch, seed + i))
    train_seconds = time.perf_counter() - t

    # 2. The operator's noise-free ensemble on the evaluation set.
    t = time.perf_counter()
    eval_votes = torch.stack([predict(m, x_eval) for m in models])
    teacher_acc = [(v == y_eval).float().mean().item() for v in eval_votes]
    hist = torch.nn.functional.one_hot(eval_votes, classes).sum(0)
    ensemble_acc = (hist.argmax(1) == y_eval).float().mean().item()
    ensemble_seconds = time.perf_counter() - t

    # 3. Labelling: LNMax on the queried pool items, a batch at a time.
    t = time.perf_counter()
    rng = np.random.default_rng(seed + 1)
    picked = np.random.default_rng(seed + 2).permutation(len(y_pool))[:queries]
    labels = []
    for i in range(0, len(picked), query_batch):
        xb = x_pool[torch.from_numpy(picked[i : i + query_batch])]
        votes = torch.stack([predict(m, xb) for m in models])
        counts = torch.nn.functional.one_hot(votes, classes).sum(0).numpy()
        labels.append((counts + discrete_laplace(rng, scale, counts.shape)).argmax(1))
    labels = np.concatenate(labels)
    label_acc = float((labels == y_pool[picked]).mean())
    label_seconds = time.perf_counter() - t

    # 4. The student on the answered labels (LNMax answers every query).
    t = time.perf_counter()
    torch.manual_seed(seed)
    student = fit(mlp(classes), x_pool[torch.from_numpy(picked)], torch.from_numpy(labels.astype(np.int64)), s_epochs, batch, seed)
    student_acc = (predict(student, x_eval) == y_eval).float().mean().item()
    student_seconds = time.perf_counter() - t

    print_report("torch pate", started,
                 {"load_seconds": load_seconds, "train_teachers_seconds": train_seconds, "ensemble_seconds": ensemble_seconds,
                  "label_seconds": label_seconds, "student_train_seconds": student_seconds},
                 {"mean_teacher_accuracy": float(np.mean(teacher_acc)), "ensemble_accuracy": ensemble_acc,
                  "label_accuracy": label_acc, "student_accuracy": student_acc},
                 teachers=teachers, queries=int(len(picked)))

if __name__ == "__main__":
    main()
