#!/usr/bin/env bash
# The project against PyTorch on the same CPU, side by side in one run, with
# the ratios: per-model training and inference (ml/benches/train.rs against
# ml/benches/torch_reference.py), the whole `pate lab --preset fast`
# against a single-process PyTorch PATE pipeline (ml/benches/torch_pate.py),
# and, with `--only private`, the lab's private defaults against their
# single-process twin (ml/benches/torch_pate_private.py; about 15 minutes).
# Both sides get the same threads, epochs and batch; each pair runs back to
# back, and `uptime` is recorded around it (the machine may be shared).
#
# Usage: scripts/bench.sh [--install-torch] [--only models|pipeline|private]
#                         [--cases "mlp-6k cnn-6k"] [--threads N]
#                         [--epochs N] [--batch N] [--data DIR] [--out DIR]
#   --install-torch  create ~/.cache/pate/torch-venv with numpy, torch and
#                    kymatio (PyPI; run on the CPU) if it is missing; without it the script
#                    uses that venv, or $PATE_TORCH_PYTHON, and fails if
#                    neither has torch.
# Writes a Markdown report to OUT/bench.md (default OUT: bench-out) and
# prints it; paste it into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

invocation="$*"
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
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

venv="$HOME/.cache/pate/torch-venv"
py="${PATE_TORCH_PYTHON:-$venv/bin/python}"
if [ "$install" = 1 ] && ! "$py" -c 'import torch, numpy, kymatio' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet numpy torch scipy kymatio
  py="$venv/bin/python"
  # kymatio 0.3 imports scipy.special.sph_harm (its 3-D transform only),
  # which SciPy 1.17 removed: drop that import, the 2-D transform never uses it.
  "$py" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("kymatio")
if spec:
    f = pathlib.Path(spec.origin).parent / "scattering3d" / "filter_bank.py"
    src = f.read_text()
    old = "from scipy.special import sph_harm, factorial"
    if old in src:
        f.write_text(src.replace(old, "from scipy.special import factorial\nsph_harm = None"))
EOF
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
  echo "### Run of $(date -u '+%Y-%m-%d %H:%M UTC'): \`scripts/bench.sh $invocation\`"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
  echo "$("$py" -c 'import torch; print("PyTorch", torch.__version__)'), $threads threads on both sides, data $data."
  echo
} > "$report"

if [ "$only" != pipeline ] && [ "$only" != private ]; then
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

# One whole pipeline: `pate lab --preset PRESET` then its PyTorch twin
# SCRIPT, asked as many queries as the lab asked; the ratio table.
pipeline() {
  local preset="$1" script="$2"
  echo "bench: building the binaries" >&2
  nice cargo build --release --workspace --bins >/dev/null 2>&1 || nice cargo build --release --workspace --bins
  lab_out="$out/lab-$preset"
  rm -rf "$lab_out"
  echo "bench: pate lab --preset $preset" >&2
  before=$(load)
  nice "$target/release/pate" lab --preset "$preset" --data "$data" --out "$lab_out" > "$out/lab-$preset.log" 2>&1 || { tail -20 "$out/lab-$preset.log" >&2; exit 1; }
  mid=$(load)
  asked=$(python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print(r['queries_asked'] - r['queries_refused'])" "$lab_out/report.json")
  echo "bench: the PyTorch twin ($script, $asked queries asked)" >&2
  PATE_ASKED="$asked" TORCH_THREADS="$threads" nice "$py" "$script" "$data" 2>"$out/torch-$preset.log" | tail -1 > "$out/torch-$preset.json"
  after=$(load)
  python3 - "$lab_out/report.json" "$out/torch-$preset.json" "$before" "$mid" "$after" "$preset" "$script" >> "$report" <<'EOF'
import json, sys
lab, torch = (json.load(open(p)) for p in sys.argv[1:3])
before, mid, after, preset, script = sys.argv[3:8]
acc = lambda xs: sum(xs) / len(xs)
rows = [
    ("teacher training (s)", lab["train_teachers_seconds"], torch["train_teachers_seconds"]),
    ("ensemble measurement (s)", lab["ensemble_seconds"], torch["ensemble_seconds"]),
    ("student: labelling (s)", lab["student_query_seconds"], torch["label_seconds"]),
    ("student: training (s)", lab["student_train_seconds"], torch["student_train_seconds"]),
    ("whole pipeline (s)", lab["total_seconds"], torch["total_seconds"]),
]
print(f"Pipeline: `pate lab --preset {preset}` (processes, gRPC, mutual TLS, ledger, accountant) then "
      f"`python {script}` (one process, same configuration); "
      f"load before {before}, between {mid}, after {after}.")
print()
print("| | pate lab | PyTorch | ratio (pate / PyTorch) |")
print("|---|---:|---:|---:|")
for name, a, b in rows:
    print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
print(f"| queries answered | {lab['queries_answered']} | {torch.get('queries_answered', lab['queries_answered'])} | |")
print(f"| mean teacher accuracy | {acc(lab['teacher_accuracies']):.4f} | {torch['mean_teacher_accuracy']:.4f} | |")
print(f"| ensemble accuracy (noise-free) | {lab['ensemble_accuracy']:.4f} | {torch['ensemble_accuracy']:.4f} | |")
print(f"| released label accuracy | {lab['label_accuracy']:.4f} | {torch['label_accuracy']:.4f} | |")
print(f"| student accuracy | {lab['student_accuracy']:.4f} | {torch['student_accuracy']:.4f} | |")
print()
EOF
}

case "$only" in
  models) ;;
  private) pipeline private ml/benches/torch_pate_private.py ;;
  *) pipeline fast ml/benches/torch_pate.py ;;
esac

cat "$report"
