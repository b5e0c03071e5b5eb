#!/usr/bin/env bash
# The GPU check: one command, on a GPU machine without internet access, in under 9 minutes.
#
#   1. Installs what aenp and the neuralprocesses peer need beyond the machine's image, from the
#      wheels in .whl/ (benchmarks/gpu_wheels.txt), into a temporary folder, and nothing else;
#      aenp itself runs from src/. The folder .whl/ is ignored by git: copy it to the GPU
#      machine with the working tree.
#   2. Runs aenp's tests of what changes on the device (tests/test_device.py: evaluation,
#      gridded batches, compiled steps and their random draws, training with the defaults on
#      gp1d and climate), for at most 200 s; a failure is reported and the check goes on.
#   3. Prints training steps/s of every gp1d model at batch 16 and 128: aenp eager, aenp
#      compiled and the neuralprocesses ConvCNP, side by side (benchmarks/training_step.py).
#   4. Trains the gp1d ConvCNP pair (convcnp, convcnp_approx) at paper scale, both at once, for
#      the minutes left (epochs sized from step 3's speed so the cosine schedule anneals;
#      trainer.max_time caps them), and prints their log-likelihood and gap to the
#      ground truth (`aenp reproduce gp1d --scale paper`).
#
# Usage:
#   benchmarks/gpu_check.sh [--device cuda|cpu] [--smoke] [--as-image] [--minutes M]
#                           [--bench-minutes B] [--precision 32-true|bf16-mixed] [--out DIR]
#                           [-- HYDRA_OVERRIDE ...]
#   benchmarks/gpu_check.sh --fetch-wheels     # with internet access: re-make .whl/
#
#   --smoke          a tiny version of every step (`--device cpu --smoke` takes a few minutes),
#                    training with what `auto` gives on a GPU: compiled, bf16-mixed, a worker
#   --as-image       (a rehearsal elsewhere) every module that neither the GPU machine's image
#                    (benchmarks/gpu_image.txt) nor the wheels provide is absent
#   --minutes        the whole check's budget (default 9)
#   --bench-minutes  after this, step 3 starts no further measurement (default 5)
#   --precision      of aenp's steps in step 3 (default 32-true; training uses its config's)
#   --out            where the log, the benchmark's JSON, results.md and an archive of the
#                    trained runs (figures included, checkpoints left out) go: default $OUT,
#                    else runs/gpu_check
#   after --          Hydra overrides for the training of step 4 (e.g. data.num_test_tasks=1024)
#
# Python: $PYTHON, else .venv/bin/python where it exists, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda smoke=0 fetch=0 as_image=0 minutes=9 bench_minutes=5 precision=32-true
out=${OUT:-runs/gpu_check}
overrides=()
while (($#)); do
    case $1 in
        --device) device=$2; shift ;;
        --smoke) smoke=1 ;;
        --as-image) as_image=1 ;;
        --fetch-wheels) fetch=1 ;;
        --minutes) minutes=$2; shift ;;
        --bench-minutes) bench_minutes=$2; shift ;;
        --precision) precision=$2; shift ;;
        --out) out=$2; shift ;;
        --) shift; overrides=("$@"); break ;;
        *) echo "gpu_check.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ((fetch)); then
    exec "$PYTHON" benchmarks/gpu_wheels.py fetch
fi

budget=$((minutes * 60 - 20))   # seconds; 20 s spare for archiving and stragglers
eval_reserve=90                 # seconds for evaluating both models on 4,096-task splits (on the GPU)
minimum_training=30
# The ConvCNPs first: step 4 sizes its training from the compiled ConvCNP's speed, and
# measurements stop starting at --bench-minutes (each compiled one compiles afresh).
bench=(--models convcnp convcnp_approx tnp tetnp tetnp_approx --batch-sizes 16 128
       --repeats 1 --steps 200)
paper=()
if ((smoke)); then
    eval_reserve=30
    bench=(--models convcnp@neuralprocesses --batch-sizes 16 --repeats 1 --steps 2)
    # What `auto` trains with on a GPU, so that a smoke run on a CPU rehearses it.
    paper=(data.num_train_tasks=64 data.num_val_tasks=32 data.num_test_tasks=32
           trainer.max_epochs=1 trainer.compile=true trainer.precision=bf16-mixed
           data.num_workers=1 model.hparams.points_per_unit=16
           model.hparams.channels=8 model.hparams.num_layers=2)
fi

mkdir -p "$out"
log=$out/gpu_check.log
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exec > >(tee "$log") 2>&1

echo "== 1. Installing the wheels of benchmarks/gpu_wheels.txt ($(date -u +%FT%TZ))"
"$PYTHON" benchmarks/gpu_wheels.py check
mapfile -t wheels < <("$PYTHON" benchmarks/gpu_wheels.py installable)
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" "${wheels[@]}"
export PYTHONPATH="$PWD/src:$work/site${PYTHONPATH:+:$PYTHONPATH}"
if ((as_image)); then
    "$PYTHON" benchmarks/gpu_wheels.py image-site --site "$work/image" >/dev/null
    export PYTHONPATH="$work/image:$PYTHONPATH"
    echo "As on the GPU machine: only the modules of benchmarks/gpu_image.txt and the wheels"
fi
"$PYTHON" - "$device" <<'EOF'
import sys
from importlib.metadata import version

import neuralprocesses.torch
import torch

import aenp

device = sys.argv[1]
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"aenp {aenp.__version__} from {aenp.__file__}; neuralprocesses {version('neuralprocesses')}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: {gpu}; running on {device}")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check.sh: --device cuda but torch sees no GPU (use --device cpu)")
EOF

echo
echo "== 2. aenp's tests on the device ($((SECONDS)) s in)"
if ! AENP_TEST_DEVICE=$device timeout 200 "$PYTHON" -m pytest -v -p no:cacheprovider \
    tests/test_device.py; then
    echo "The device tests failed or ran out of time (above); the check goes on."
fi

echo
echo "== 3. Training steps/s, side by side ($((SECONDS)) s in)"
"$PYTHON" benchmarks/training_step.py --device "$device" --precision "$precision" "${bench[@]}" \
    --peer-python "$PYTHON" --time-limit $((bench_minutes * 60 - SECONDS)) \
    --json "$out/training_step.json"

echo
echo "== 4. gp1d ConvCNP pair at paper scale ($((SECONDS)) s in)"
seconds=$((budget - SECONDS - eval_reserve))
if ((seconds < minimum_training)); then
    echo "No time left to train ($seconds s); raise --minutes or lower --bench-minutes."
    exit 1
fi
max_time=$(printf '00:00:%02d:%02d' $((seconds / 60)) $((seconds % 60)))
# The cosine schedule anneals over trainer.max_epochs, so size the epochs to the time left
# (from the ConvCNP's measured steps/s) rather than let max_time cut training mid-schedule;
# max_time stays as the cap.
if ((!smoke)); then
    epochs=$("$PYTHON" - "$out/training_step.json" "$seconds" "$device" <<'EOF'
import json
import sys

EFFICIENCY = 0.4  # two runs share the device; sampling, validation and the first compile
STEPS_PER_EPOCH = 1000  # data.num_train_tasks=16000 of the paper plan, batch 16
summary, seconds, device = json.load(open(sys.argv[1])), float(sys.argv[2]), sys.argv[3]
contender = "compiled" if device == "cuda" else "eager"
rates = [
    r["steps_per_second"]
    for m in summary["measurements"]
    if (m["model"], m["batch_size"], m["contender"]) == ("convcnp", 16, contender)
    for r in m["results"]
    if "steps_per_second" in r
]
rate = rates[0] if rates else 5.0
print(max(1, int(seconds * rate * EFFICIENCY / STEPS_PER_EPOCH)))
EOF
)
    paper=("trainer.max_epochs=$epochs")
fi
echo "Training for at most $seconds s (trainer.max_time=$max_time; ${paper[*]:-smoke settings})"
runs=$work/gp1d-paper
"$PYTHON" -c 'import sys; from aenp.cli import main; sys.exit(main())' \
    reproduce gp1d --scale paper --models convcnp,convcnp_approx --parallel 2 --out "$runs" \
    "trainer.max_time=$max_time" "${paper[@]}" "${overrides[@]}"
"$PYTHON" - "$runs/results.json" <<'EOF'
import json
import sys

summary = json.load(open(sys.argv[1]))
print("\nPer target, nats (mean ± standard error over test tasks):")
print("| model | split | log-likelihood | ground truth | gap | trained s |")
print("|---|---|---|---|---|---|")
for result in summary["results"]:
    for split, metrics in result["splits"].items():
        cells = [
            f"{metrics[m]['mean']:.3f} ± {metrics[m]['stderr']:.3f}" if m in metrics else "—"
            for m in ("loglik", "gt_loglik", "gap")
        ]
        print(f"| {result['model']} | {split} | {' | '.join(cells)} | {result['train_seconds']:.0f} |")
EOF
cp "$runs/results.md" "$out/results.md"
tar -czf "$out/gp1d-paper.tar.gz" -C "$work" --exclude='*.ckpt' gp1d-paper
echo
echo "Done in $SECONDS s: $log, $out/training_step.json, $out/results.md, $out/gp1d-paper.tar.gz"
