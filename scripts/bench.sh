#!/usr/bin/env bash
# The project against PyTorch on the same CPU, side by side in one run, with
# the ratios: per-model training and inference (ml/benches/train.rs against
# ml/benches/torch_reference.py) and the whole `pate lab --preset fast`
# against a single-process PyTorch PATE pipeline (ml/benches/torch_pate.py).
# Both sides get the same threads, epochs and batch; each pair runs back to
# back, and `uptime` is recorded around it (the machine may be shared).
#
# Usage: scripts/bench.sh [--install-torch] [--only models|pipeline]
#                         [--cases "mlp-6k cnn-6k"] [--threads N]
#                         [--epochs N] [--batch N] [--data DIR] [--out DIR]
#   --install-torch  create ~/.cache/pate/torch-venv with numpy and torch
#                    (PyPI; run on the CPU) if it is missing; without it the script
#                    uses that venv, or $PATE_TORCH_PYTHON, and fails if
#                    neither has torch.
# Writes a Markdown report to OUT/bench.md (default OUT: bench-out) and
# prints it; paste it into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

install=0 only="" cases="mlp-6k cnn-6k" threads=2 epochs=10 batch=128 data="" out="bench-out"
while [ $# -gt 0 ]; do
  case "$1" in
    --install-torch) install=1 ;;
    --only) only="$2"; shift ;;
    --cases) cases="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --epochs) epochs="$2"; shift ;;
    --batch) batch="$2"; shift ;;
    --data) data="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

venv="$HOME/.cache/pate/torch-venv"
py="${PATE_TORCH_PYTHON:-$venv/bin/python}"
if [ "$install" = 1 ] && ! "$py" -c 'import torch, numpy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet numpy torch
  py="$venv/bin/python"
fi
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
  echo "bench: no PyTorch at $py: rerun with --install-torch, or set PATE_TORCH_PYTHON" >&2
  exit 1
fi
if [ -z "$data" ]; then
  for d in "${PATE_DATA_DIR:-}" /usr/share/datasets/fashion-mnist "$HOME/.cache/pate/fashion-mnist"; do
    if [ -n "$d" ] && ls "$d"/train-images* >/dev/null 2>&1; then data="$d"; break; fi
  done
fi
[ -n "$data" ] || { echo "bench: no Fashion-MNIST found: pass --data or run \`pate data fetch\`" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$out"
report="$out/bench.md"
load() { uptime | sed 's/.*load average: //'; }
# Column COL (by header name) of the Markdown table row whose first cell is CASE.
col() { python3 - "$1" "$2" "$3" <<'EOF'
import sys
path, case, name = sys.argv[1:]
header = None
for line in open(path):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if "case" in cells:
        header = cells
    elif header and cells and cells[0] == case:
        i = next(i for i, h in enumerate(header) if h.startswith(name))
        print(cells[i].replace(",", ""))
        break
EOF
}
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}x')" "$1" "$2"; }

{
  echo "### Run of $(date -u '+%Y-%m-%d %H:%M UTC'): \`scripts/bench.sh $*\`"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
  echo "$("$py" -c 'import torch; print("PyTorch", torch.__version__)'), $threads threads on both sides, data $data."
  echo
} > "$report"

if [ "$only" != pipeline ]; then
  echo "bench: building the train bench" >&2
  nice cargo bench -p pate-ml --bench train --no-run >/dev/null 2>&1 || nice cargo bench -p pate-ml --bench train --no-run
  echo "bench: models ($cases), epochs $epochs, batch $batch, $threads threads" >&2
  before=$(load)
  # shellcheck disable=SC2086
  PATE_DATA_DIR="$data" RAYON_NUM_THREADS="$threads" PATE_BENCH_EPOCHS="$epochs" PATE_BENCH_BATCH="$batch" \
    nice cargo bench -p pate-ml --bench train -- $cases 2>"$out/rust-train.log" | tee "$out/rust-train.md" >&2
  mid=$(load)
  # shellcheck disable=SC2086
  TORCH_THREADS="$threads" PATE_BENCH_EPOCHS="$epochs" PATE_BENCH_BATCH="$batch" \
    nice "$py" ml/benches/torch_reference.py "$data" $cases | tee "$out/torch-train.md" >&2
  after=$(load)
  {
    echo "Per model: \`RAYON_NUM_THREADS=$threads PATE_BENCH_EPOCHS=$epochs PATE_BENCH_BATCH=$batch cargo bench -p pate-ml --bench train -- $cases\`"
    echo "then \`TORCH_THREADS=$threads ... python ml/benches/torch_reference.py $cases\`; load (1, 5, 15 min) before $before, between $mid, after $after."
    echo
    echo "| case | epochs | batch | pate train samples/s | torch train samples/s | train ratio | pate test acc | torch test acc | pate inference/s | torch inference/s | inference ratio |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in $cases; do
      rt=$(col "$out/rust-train.md" "$c" "train samples/s"); tt=$(col "$out/torch-train.md" "$c" "train samples/s")
      ri=$(col "$out/rust-train.md" "$c" "inference"); ti=$(col "$out/torch-train.md" "$c" "inference")
      ra=$(col "$out/rust-train.md" "$c" "test accuracy"); ta=$(col "$out/torch-train.md" "$c" "test accuracy")
      echo "| $c | $epochs | $batch | $rt | $tt | $(ratio "$rt" "$tt") | $ra | $ta | $ri | $ti | $(ratio "$ri" "$ti") |"
    done
    echo
  } >> "$report"
fi

if [ "$only" != models ]; then
  echo "bench: building the binaries" >&2
  nice cargo build --release --workspace --bins >/dev/null 2>&1 || nice cargo build --release --workspace --bins
  lab_out="$out/lab-fast"
  rm -rf "$lab_out"
  echo "bench: pate lab --preset fast" >&2
  before=$(load)
  nice "$target/release/pate" lab --preset fast --data "$data" --out "$lab_out" > "$out/lab.log" 2>&1 || { tail -20 "$out/lab.log" >&2; exit 1; }
  mid=$(load)
  echo "bench: the PyTorch PATE pipeline" >&2
  TORCH_THREADS="$threads" nice "$py" ml/benches/torch_pate.py "$data" 2>"$out/torch-pate.log" | tail -1 > "$out/torch-pate.json"
  after=$(load)
  python3 - "$lab_out/report.json" "$out/torch-pate.json" "$before" "$mid" "$after" >> "$report" <<'EOF'
import json, sys
lab, torch = (json.load(open(p)) for p in sys.argv[1:3])
before, mid, after = sys.argv[3:6]
acc = lambda xs: sum(xs) / len(xs)
rows = [
    ("teacher training (s)", lab["train_teachers_seconds"], torch["train_teachers_seconds"]),
    ("ensemble measurement (s)", lab["ensemble_seconds"], torch["ensemble_seconds"]),
    ("student: labelling (s)", lab["student_query_seconds"], torch["label_seconds"]),
    ("student: training (s)", lab["student_train_seconds"], torch["student_train_seconds"]),
    ("whole pipeline (s)", lab["total_seconds"], torch["total_seconds"]),
]
print("Pipeline: `pate lab --preset fast` (processes, gRPC, mutual TLS, ledger) then "
      "`python ml/benches/torch_pate.py` (one process, same configuration); "
      f"load before {before}, between {mid}, after {after}.")
print()
print("| | pate lab | PyTorch | ratio (pate / PyTorch) |")
print("|---|---:|---:|---:|")
for name, a, b in rows:
    print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
print(f"| mean teacher accuracy | {acc(lab['teacher_accuracies']):.4f} | {torch['mean_teacher_accuracy']:.4f} | |")
print(f"| ensemble accuracy (noise-free) | {lab['ensemble_accuracy']:.4f} | {torch['ensemble_accuracy']:.4f} | |")
print(f"| released label accuracy | {lab['label_accuracy']:.4f} | {torch['label_accuracy']:.4f} | |")
print(f"| student accuracy | {lab['student_accuracy']:.4f} | {torch['student_accuracy']:.4f} | |")
print()
EOF
fi

cat "$report"
