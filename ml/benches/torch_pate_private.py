#!/usr/bin/env python3
"""A single-process PyTorch twin of `pate lab`'s private preset (the lab's
defaults), the reference its wall time is measured against
(scripts/bench.sh --only private). One process, no network, no ledger, no
privacy accounting (the lab's accountant and smooth-sensitivity release
run inside its times; this twin skips them): the fastest a PyTorch user
would write the same pipeline.

The same configuration as cli/src/lab/preset.rs (private):
  - 250 teachers, each a linear classifier on fixed wavelet scattering
    features (kymatio's Scattering2D(J=2, L=8), 81 maps of 7x7, each value
    square-rooted, as pate_ml::scatter), on one of 250 disjoint partitions
    of the 60,000 training items (240 each), full batch, 300 AdamW steps at
    lr 0.03, weight decay 1e-4. The scattering of each item is computed
    once (a single process can share it; the lab's teacher processes each
    transform what they see);
  - the operator's noise-free ensemble on the evaluation set (the last
    1,000 test items);
  - Confident-GNMax (T = 200, sigma1 = 150, sigma2 = 40) on pool items in a
    seeded order, 10 per batch, until PATE_ASKED queries were asked (give
    it the lab's `9000 - queries_refused` so both ask as many);
  - the semi-supervised CNN student (pate_ml::semi, FixMatch-style): 32
    answered items and 224 unlabelled pool items per step, weak view a
    shift of up to 1 pixel, strong view a shift of up to 3 and an 8x8
    cutout, pseudo-labels at confidence 0.95, unlabelled weight 1, AdamW lr
    1e-3, an epoch being one pass over the unlabelled pool, 200 epochs.

Usage: python3 ml/benches/torch_pate_private.py [DATA_DIR]
  env: TORCH_THREADS (2), PATE_ASKED (540), PATE_STUDENT_EPOCHS (200),
       PATE_SEED (0)
Needs torch, numpy and kymatio (scripts/bench.sh --install-torch puts them
in ~/.cache/pate/torch-venv). Prints one JSON object on the last line.
"""
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_pate import env, pate_split, print_report  # noqa: E402  (the same split and report)
from torch_reference import cnn  # noqa: E402  (the same layers)

TEACHERS, T, SIGMA1, SIGMA2, QUERY_BATCH = 250, 200.0, 150.0, 40.0, 10
LABELLED_BATCH, RATIO, CONFIDENCE = 32, 7, 0.95


def scattering_features(x, batch=500):
    """sqrt of kymatio's order-2 scattering (J=2, L=8): [n, 81 * 7 * 7]."""
    try:
        from kymatio.torch import Scattering2D
    except ImportError as e:  # pragma: no cover - a setup error, said plainly
        sys.exit(f"torch_pate_private: kymatio is missing ({e}); pip install kymatio")
    s = Scattering2D(J=2, shape=(28, 28), L=8)
    with torch.no_grad():
        out = [s(x[i : i + batch, 0]).clamp(min=0).sqrt().flatten(1) for i in range(0, len(x), batch)]
    return torch.cat(out)


def fit_linear(f, y, classes, steps=300, lr=0.03, seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(f.shape[1], classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(f), y).backward()
        opt.step()
    return model


def augment(x, shift, cutout, g):
    """Per-item random shift (zero fill) and square cutout, vectorised."""
    n, _, h, w = x.shape
    if shift:
        pad = nn.functional.pad(x, (shift, shift, shift, shift))
        oy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
        ox = torch.randint(0, 2 * shift + 1, (n,), generator=g)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, :]
        x = pad[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)
    if cutout:
        cy = torch.randint(0, h, (n,), generator=g)[:, None, None]
        cx = torch.randint(0, w, (n,), generator=g)[:, None, None]
        r, c = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
        hole = (r >= cy - cutout // 2) & (r < cy + (cutout + 1) // 2) & (c >= cx - cutout // 2) & (c < cx + (cutout + 1) // 2)
        x = x.masked_fill(hole.unsqueeze(1), 0.0)
    return x


def train_student(x_lab, y_lab, x_unl, classes, epochs, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = cnn(classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    u_batch = LABELLED_BATCH * RATIO
    steps = max(-(-len(y_lab) // LABELLED_BATCH), -(-len(x_unl) // u_batch))
    l_perm, l_pos, u_perm, u_pos = None, len(y_lab), None, len(x_unl)
    model.train()
    for _ in range(epochs):
        for _ in range(steps):
            if l_pos >= len(y_lab):
                l_perm, l_pos = torch.randperm(len(y_lab), generator=g), 0
            li = l_perm[l_pos : l_pos + LABELLED_BATCH]
            l_pos += len(li)
            if u_pos + u_batch > len(x_unl):
                u_perm, u_pos = torch.randperm(len(x_unl), generator=g), 0
            ui = u_perm[u_pos : u_pos + u_batch]
            u_pos += len(ui)
            loss = nn.functional.cross_entropy(model(augment(x_lab[li], 1, 0, g)), y_lab[li])
            xu = x_unl[ui]
            with torch.no_grad():
                probs = model(augment(xu, 1, 0, g)).softmax(1)
            conf, pseudo = probs.max(1)
            logp = model(augment(xu, 3, 8, g)).log_softmax(1)
            loss_u = -(logp.gather(1, pseudo[:, None])[:, 0] * (conf >= CONFIDENCE).float()).mean()
            opt.zero_grad(set_to_none=True)
            (loss + loss_u).backward()
            opt.step()
    model.eval()
    return model


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    threads = env("TORCH_THREADS", "2")
    asked = env("PATE_ASKED", "540")
    s_epochs = env("PATE_STUDENT_EPOCHS", "200")
    seed = env("PATE_SEED", "0")
    eval_size = 1000
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()

    x_train, y_train, x_pool, y_pool, x_eval, y_eval, classes = pate_split(data_dir, eval_size)
    load_seconds = time.perf_counter() - started

    # 1. Teachers: the training items' scattering once, then 250 linear heads.
    t = time.perf_counter()
    f_train = scattering_features(x_train)
    parts = np.array_split(np.random.default_rng(seed).permutation(len(y_train)), TEACHERS)
    heads = [fit_linear(f_train[idx], y_train[idx], classes, seed=seed + i) for i, idx in enumerate(map(torch.from_numpy, parts))]
    train_seconds = time.perf_counter() - t

    def votes(f):
        with torch.no_grad():
            return torch.stack([h(f).argmax(1) for h in heads])

    # 2. The operator's noise-free ensemble on the evaluation set.
    t = time.perf_counter()
    ev = votes(scattering_features(x_eval))
    teacher_acc = [(v == y_eval).float().mean().item() for v in ev]
    ensemble_acc = (nn.functional.one_hot(ev, classes).sum(0).argmax(1) == y_eval).float().mean().item()
    ensemble_seconds = time.perf_counter() - t

    # 3. Confident-GNMax, a batch of 10 at a time.
    t = time.perf_counter()
    rng = np.random.default_rng(seed + 1)
    order = np.random.default_rng(seed + 2).permutation(len(y_pool))[:asked]
    answered, labels = [], []
    for i in range(0, len(order), QUERY_BATCH):
        idx = order[i : i + QUERY_BATCH]
        counts = nn.functional.one_hot(votes(scattering_features(x_pool[torch.from_numpy(idx)])), classes).sum(0).numpy()
        passed = counts.max(1) + rng.normal(0, SIGMA1, len(idx)) >= T
        noisy = (counts + rng.normal(0, SIGMA2, counts.shape)).argmax(1)
        answered.extend(idx[passed])
        labels.extend(noisy[passed])
    answered, labels = np.array(answered, dtype=np.int64), np.array(labels, dtype=np.int64)
    label_acc = float((labels == y_pool[answered]).mean()) if len(labels) else 0.0
    label_seconds = time.perf_counter() - t

    # 4. The semi-supervised student on the answers and the rest of the pool.
    t = time.perf_counter()
    rest = np.setdiff1d(np.arange(len(y_pool)), answered)
    student = train_student(x_pool[torch.from_numpy(answered)], torch.from_numpy(labels), x_pool[torch.from_numpy(rest)],
                            classes, s_epochs, seed)
    with torch.no_grad():
        student_acc = (student(x_eval).argmax(1) == y_eval).float().mean().item()
    student_seconds = time.perf_counter() - t

    print_report("torch private pate", started,
                 {"load_seconds": load_seconds, "train_teachers_seconds": train_seconds, "ensemble_seconds": ensemble_seconds,
                  "label_seconds": label_seconds, "student_train_seconds": student_seconds},
                 {"mean_teacher_accuracy": float(np.mean(teacher_acc)), "ensemble_accuracy": ensemble_acc,
                  "label_accuracy": label_acc, "student_accuracy": student_acc},
                 teachers=TEACHERS, queries_asked=int(asked), queries_answered=int(len(labels)), student_epochs=s_epochs)

if __name__ == "__main__":
    main()
