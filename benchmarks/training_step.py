r"""Training steps per second of the gp1d models: aenp eager and compiled, today's code, peers.

    python benchmarks/training_step.py --models convcnp@quick tetnp@quick --batch-sizes 16 \
        --baseline-src /work/base/src [--steps 30] [--repeats 3] [--device cpu] [--threads 2] \
        [--contenders eager baseline]
    python benchmarks/training_step.py --device cuda --models convcnp --batch-sizes 16 128 \
        --peer-python /tmp/peer/bin/python [--precision bf16-mixed]

A training step is forward, loss, backward and AdamW step (gradient clipping, logging and the
learning-rate schedule aside) on up to 32 distinct pre-generated gp1d batches (data generation
is not timed): nc ~ U{1..64}, nt = 128, as ``aenp train`` draws them. A warm-up pass over the
batches (which compiles every shape they have) is timed apart from the steps that follow it.
The contenders:

* ``eager``: aenp's training loss (:func:`aenp.train.module.negative_mean_loglik`) and
  optimiser (:func:`aenp.train.module.adamw`), on the batches as drawn;
* ``compiled``: the same with the loss of :func:`aenp.train.module.compiled_loss`
  (``torch.compile``, CUDA graphs on a GPU), on batches padded to 64 context points (one shape),
  as ``aenp train`` pads them (``data.pad_context=auto``);
* ``baseline`` (with ``--baseline-src``): another checkout's ``aenp`` (e.g. the code before a
  change), eager, on the batches as drawn, with a plain AdamW;
* ``neuralprocesses`` (with ``--peer-python``, a Python that imports neuralprocesses 0.2.7):
  its ConvCNP, for the configurations that are its configuration (``convcnp`` at paper size and
  ``convcnp@neuralprocesses``), as in ``benchmarks/peers.py``, always in float32.

The models: every model of ``aenp reproduce gp1d`` at its paper size (``tnp``) and its quick
size (``tnp@quick``), as the plan in ``configs/reproduce/gp1d.yaml`` builds them, and the peers'
configurations of BENCHMARKS.md (``convcnp@neuralprocesses``, ``convcnp@tnp``, ``tnp@tnp``).

Every measurement is a fresh process (so peak memory is its own), and the contenders are
interleaved within each repeat so that drifts in machine load affect them alike. Every process
starts with aenp's allocator setting (:data:`aenp.train.cpu.MALLOC_ENVIRONMENT`): with glibc's
defaults whether a step faults its tensors' pages in again depends on the process's history,
which would make the ratios measure that rather than the code. On a GPU the
device is synchronised only before and after the timed steps. Prints Markdown tables: speed and
memory per contender, ratios of the medians, what compiling produced (graphs, graph breaks,
graphs compiled during the timed steps, i.e. recompilations), and for a ConvCNP its U-Net's
share of the eager step and the ceiling that share sets on the ratios (:func:`unet_notes`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gp1d_models import configurations
from harness import peak_memory, unet_milliseconds
from peers import AENP_CONVCNP, load_batches, neuralprocesses_training, write_batches

CONTENDERS = ("eager", "compiled", "baseline", "neuralprocesses")
RATIOS = (
    ("compiled", "eager"),
    ("eager", "baseline"),
    ("compiled", "baseline"),
    ("compiled", "neuralprocesses"),
)
"""The ratios of median steps/s the summary shows, where both contenders ran."""
PRECISIONS = ("32-true", "bf16-mixed")
DEFAULT_STEPS = {"cpu": 30, "cuda": 300}
POOL = 32
"""Distinct batches the steps cycle through."""
WARMUP_STEPS = 3
"""Untimed first steps at least (one pass over the batches): they compile every shape the
batches have, and on a GPU record the CUDA graphs."""
LR = 5e-4


def is_neuralprocesses_configuration(key: str, hparams: dict[str, Any]) -> bool:
    """Whether aenp's model ``key`` with ``hparams`` is neuralprocesses' ConvCNP."""
    return key == "convcnp" and all(hparams.get(k) == v for k, v in AENP_CONVCNP.items())


# Measurements, each in a process of its own.


def time_steps(step: Callable, batches: Sequence, steps: int, device: str) -> dict[str, Any]:
    """A warm-up pass over the batches, then ``steps`` timed steps cycling through them.

    Also counts the timed steps' page faults and system (kernel) CPU time per step, and reads
    the peak memory at their end (:func:`harness.peak_memory`), before any further measurement.
    """
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    for i in range(max(WARMUP_STEPS, len(batches))):
        step(batches[i % len(batches)])
    sync()
    warmup_seconds = time.perf_counter() - start
    graphs_before = compiled_graphs()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    sync()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return peak_memory(device) | {
        "steps_per_second": steps / seconds,
        "warmup_seconds": warmup_seconds,
        "graphs_compiled_in_timed_steps": compiled_graphs() - graphs_before,
        "faults_per_step": (after.ru_minflt - usage.ru_minflt) / steps,
        "system_ms_per_step": (after.ru_stime - usage.ru_stime) * 1000 / steps,
    }


def compiled_graphs() -> int:
    """How many graphs ``torch.compile`` has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def graph_breaks() -> list[str]:
    """The first line of every reason ``torch.compile`` gave for a graph break."""
    from torch._dynamo.utils import counters

    reasons = [*counters["graph_break"], *counters["unimplemented"]]
    return sorted({reason.strip().splitlines()[0] for reason in reasons})


def autocast(spec: dict[str, Any]):
    """Mixed precision as ``--precision`` asks (bf16 autocast of the forward pass and loss)."""
    import torch

    enabled = spec["precision"] == "bf16-mixed"
    return torch.autocast(spec["device"], dtype=torch.bfloat16, enabled=enabled)


def child_aenp(spec: dict[str, Any]) -> dict[str, Any]:
    """The training step of aenp, eager, or compiled on padded batches."""
    import torch

    from aenp import Batch, build_model
    from aenp.train.cpu import configure_cpu
    from aenp.train.module import adamw, compiled_loss, negative_mean_loglik

    configure_cpu()  # as `aenp train` does
    device = torch.device(spec["device"])
    compiled = spec["contender"] == "compiled"
    batches = []
    for arrays in load_batches(spec["batches"], spec["count"]):
        batch = Batch(**{k: torch.from_numpy(v) for k, v in arrays.items()})
        batches.append((batch.pad_context(spec["num_context"]) if compiled else batch).to(device))
    torch.manual_seed(0)
    model = build_model(spec["key"], 1, 1, **spec["hparams"]).to(device)
    optimizer = adamw(model.parameters(), LR, 0.0)
    loss_of = compiled_loss(model, device) if compiled else negative_mean_loglik

    def step(batch):
        with autocast(spec):
            loss = loss_of(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    result = time_steps(step, batches, spec["steps"], spec["device"])
    result["graphs"] = compiled_graphs()
    result["graph_breaks"] = graph_breaks()
    if not compiled:
        result["unet_ms"] = unet_milliseconds(model, batches, model)
    return result | {"parameters": sum(p.numel() for p in model.parameters())}


COST_NEUTRAL_HPARAMS = frozenset({"kernel_lengthscale"})
"""Hyper-parameters that change what a model computes but not what a step costs: a baseline
builds the model without them, since an older checkout may not know them."""


def child_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    """The training step of the ``aenp`` on ``PYTHONPATH`` (a baseline), eager."""
    import torch

    from aenp import Batch, build_model

    try:
        from aenp.batch import target_loglik
    except ImportError:  # code from before the batch types moved to aenp.batch
        from aenp.data.batch import target_loglik

    device = torch.device(spec["device"])
    batches = [
        Batch(**{k: torch.from_numpy(v) for k, v in b.items()}).to(device)
        for b in load_batches(spec["batches"], spec["count"])
    ]
    torch.manual_seed(0)
    hparams = {k: v for k, v in spec["hparams"].items() if k not in COST_NEUTRAL_HPARAMS}
    model = build_model(spec["key"], 1, 1, **hparams).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)

    def step(batch):
        with autocast(spec):
            loss = -target_loglik(batch, model(batch)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    result = time_steps(step, batches, spec["steps"], spec["device"])
    return result | {"parameters": sum(p.numel() for p in model.parameters())}


def child_neuralprocesses(spec: dict[str, Any]) -> dict[str, Any]:
    """The neuralprocesses ConvCNP and step (``benchmarks/peers.py``), unpadded, float32."""
    arrays = load_batches(spec["batches"], spec["count"])
    model, step, batches = neuralprocesses_training(arrays, spec["device"])
    result = time_steps(step, batches, spec["steps"], spec["device"])
    return result | {"parameters": sum(p.numel() for p in model.parameters())}


CHILDREN = {
    "eager": child_aenp,
    "compiled": child_aenp,
    "baseline": child_baseline,
    "neuralprocesses": child_neuralprocesses,
}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process (peak memory as at the end of its timed steps)."""
    import torch

    if spec["threads"] is not None:
        torch.set_num_threads(spec["threads"])
    torch.set_flush_denormal(True)  # as `aenp train` does: subnormals are slow on x86 CPUs
    return CHILDREN[spec["contender"]](spec)


def measure(python: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Runs one measurement in a fresh process; a failure is recorded, not raised.

    The process compiles into empty caches, so its warm-up is a first compilation whatever
    earlier runs left in the default caches.
    """
    command = [python, __file__, "--child", json.dumps(spec)]
    with tempfile.TemporaryDirectory() as cache:
        env = env | {"TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": f"{cache}/triton"}
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": f"exit status {done.returncode} (its output is above)"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# Tables.


def rates(results: Sequence[dict[str, Any]]) -> list[float]:
    """The steps/s of the measurements that succeeded."""
    return [r["steps_per_second"] for r in results if "steps_per_second" in r]


def ratio(runs: dict[str, list[dict]], numerator: str, denominator: str) -> float | None:
    """Median steps/s of ``numerator`` over that of ``denominator``; None if one is missing."""
    top, bottom = rates(runs.get(numerator, [])), rates(runs.get(denominator, []))
    if not top or not bottom:
        return None
    return statistics.median(top) / statistics.median(bottom)


def _median(results: Sequence[dict[str, Any]], field: str, digits: int) -> str:
    values = [r[field] for r in results if r.get(field) is not None]
    return f"{statistics.median(values):.{digits}f}" if values else "—"


def speed_table(measured: dict[tuple[str, int], dict[str, list[dict]]]) -> str:
    """One row per model, batch size and contender: speed, warm-up and memory."""
    lines = [
        "| model | batch | contender | parameters | train steps/s (median, min–max) "
        "| warm-up s | peak RSS MB | GPU peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, batch_size), runs in measured.items():
        for contender, results in runs.items():
            found = rates(results)
            if found:
                speed = f"{statistics.median(found):.1f} ({min(found):.1f}–{max(found):.1f})"
            elif results:
                speed = "failed: " + "; ".join(sorted({r["error"] for r in results}))
            else:
                speed = "not measured (time limit)"
            parameters = next((f"{r['parameters']:,}" for r in results if "parameters" in r), "—")
            lines.append(
                f"| {name} | {batch_size} | {contender} | {parameters} | {speed} "
                f"| {_median(results, 'warmup_seconds', 1)} | {_median(results, 'peak_rss_mb', 0)} "
                f"| {_median(results, 'gpu_peak_mb', 0)} |"
            )
    return "\n".join(lines)


def ratio_table(measured: dict[tuple[str, int], dict[str, list[dict]]]) -> str:
    """Ratios of median steps/s (:data:`RATIOS`) per model and batch size; — where missing.

    Empty where no pair of :data:`RATIOS` ran (e.g. ``--contenders eager``).
    """
    ran = {contender for runs in measured.values() for contender in runs}
    shown = [(a, b) for a, b in RATIOS if a in ran and b in ran]
    if not shown:
        return ""
    lines = [
        "| model | batch | " + " | ".join(f"{a} / {b}" for a, b in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for (name, batch_size), runs in measured.items():
        cells = [ratio(runs, a, b) for a, b in shown]
        text = ["—" if c is None else f"{c:.2f}×" for c in cells]
        lines.append(f"| {name} | {batch_size} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def compilation_notes(measured: dict[tuple[str, int], dict[str, list[dict]]]) -> list[str]:
    """What compiling produced per model and batch size (from the first compiled repeat)."""
    notes = []
    for (name, batch_size), runs in measured.items():
        results = [r for r in runs.get("compiled", []) if "graphs" in r]
        if not results:
            continue
        first = results[0]
        breaks = "; ".join(first["graph_breaks"]) or "none"
        notes.append(
            f"* {name}, batch {batch_size}: {first['graphs']} graph(s), "
            f"{first['graphs_compiled_in_timed_steps']} compiled during the timed steps; "
            f"graph breaks: {breaks}"
        )
    return notes


def unet_notes(measured: dict[tuple[str, int], dict[str, list[dict]]]) -> list[str]:
    """Per ConvCNP: its U-Net's share of the eager step, and the ceiling that sets on ratios.

    However little the rest of aenp's step cost, it cannot take less than its U-Net's
    convolutions (:func:`harness.unet_milliseconds`), so its steps/s over another contender's
    cannot exceed the other's step time over the U-Net's time.
    """
    notes = []
    for (name, batch_size), runs in measured.items():
        unet = [r["unet_ms"] for r in runs.get("eager", []) if r.get("unet_ms") is not None]
        eager = rates(runs.get("eager", []))
        if not unet or not eager:
            continue
        unet_ms, step_ms = statistics.median(unet), 1000 / statistics.median(eager)
        ceilings = [
            f"{1000 / statistics.median(found) / unet_ms:.2f}× {other}"
            for other in ("baseline", "neuralprocesses")
            if (found := rates(runs.get(other, [])))
        ]
        notes.append(
            f"* {name}, batch {batch_size}: U-Net {unet_ms:.1f} ms of the eager step's "
            f"{step_ms:.1f} ms ({unet_ms / step_ms:.0%})"
            + (f"; eager can be at most {', '.join(ceilings)}" if ceilings else "")
        )
    return notes


# The parent process.


def plan(
    names: Sequence[str],
    known: dict[str, tuple[str, dict[str, Any]]],
    baseline: bool,
    peer: bool,
    chosen: Sequence[str] = CONTENDERS,
) -> dict[str, list[str]]:
    """The contenders measured for each model name, of those ``chosen``."""
    contenders = {}
    for name in names:
        key, hparams = known[name]
        found = ["eager", "compiled"] + (["baseline"] if baseline else [])
        if peer and is_neuralprocesses_configuration(key, hparams):
            found.append("neuralprocesses")
        contenders[name] = [c for c in found if c in chosen]
    return contenders


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", help="configuration names (default: all)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 128])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, help="timed steps (default: 30 on cpu, 300 on cuda)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per contender")
    parser.add_argument("--threads", type=int, help="torch threads (default: 2 on cpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="32-true")
    parser.add_argument("--baseline-src", type=Path, help="an aenp source folder to time too")
    parser.add_argument("--peer-python", help="a Python that imports neuralprocesses")
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=CONTENDERS,
        default=CONTENDERS,
        help="time only these (default: every one that applies)",
    )
    parser.add_argument(
        "--time-limit", type=float, help="seconds after which no further measurement starts"
    )
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    start = time.perf_counter()
    from aenp.data.experiments import get_experiment
    from aenp.train.cpu import MALLOC_ENVIRONMENT

    known = configurations()
    names = args.models or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(known)}")
    steps = args.steps or DEFAULT_STEPS[args.device]
    threads = args.threads or (2 if args.device == "cpu" else None)
    contenders = plan(
        names, known, args.baseline_src is not None, args.peer_python is not None, args.contenders
    )
    pythonpath = os.environ.get("PYTHONPATH")
    baseline_path = os.pathsep.join(p for p in (str(args.baseline_src), pythonpath) if p)
    environments = {c: dict(os.environ) | MALLOC_ENVIRONMENT for c in CONTENDERS}
    environments["baseline"]["PYTHONPATH"] = baseline_path
    pythons = {c: sys.executable for c in CONTENDERS} | {"neuralprocesses": args.peer_python}
    count = min(steps, POOL)
    num_context = get_experiment("gp1d").max_num_context
    measured = {(n, b): {c: [] for c in contenders[n]} for b in args.batch_sizes for n in names}
    skipped = 0
    with tempfile.TemporaryDirectory() as tmp:
        files = {b: Path(tmp) / f"batches{b}.npz" for b in args.batch_sizes}
        for batch_size, path in files.items():
            write_batches(path, count, batch_size)
        for _ in range(args.repeats):
            for (name, batch_size), runs in measured.items():
                key, hparams = known[name]
                for contender, results in runs.items():
                    if args.time_limit and time.perf_counter() - start > args.time_limit:
                        skipped += 1
                        continue
                    spec = {
                        "contender": contender,
                        "key": key,
                        "hparams": hparams,
                        "batches": str(files[batch_size]),
                        "count": count,
                        "num_context": num_context,
                        "steps": steps,
                        "device": args.device,
                        "threads": threads,
                        "precision": args.precision,
                    }
                    result = measure(pythons[contender], spec, environments[contender])
                    results.append(result)
                    rate = result.get("steps_per_second")
                    done = "failed" if rate is None else f"{rate:.1f} steps/s"
                    print(f"{name}, batch {batch_size}, {contender}: {done}", file=sys.stderr)
    import torch

    print(
        f"gp1d training steps (forward, loss, backward, AdamW): device {args.device}, torch "
        f"{torch.__version__}, threads {threads or 'default'}, {args.precision}; {count} "
        f"distinct batches, a warm-up pass over them, then {steps} timed steps; "
        f"{args.repeats} fresh process(es) each\n"
    )
    print(speed_table(measured), "\n")
    print(ratio_table(measured) or "(no pair of contenders ran: no ratios)")
    notes = compilation_notes(measured)
    if notes:
        print("\nCompilation (first compiled repeat):", *notes, sep="\n")
    notes = unet_notes(measured)
    if notes:
        print("\nThe U-Net alone, forward and backward (median):", *notes, sep="\n")
    if skipped:
        print(f"\n{skipped} measurement(s) skipped: the time limit of {args.time_limit} s passed")
    if args.json:
        from aenp.files import write_json

        write_json(
            args.json,
            {
                "device": args.device,
                "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
                "threads": threads,
                "precision": args.precision,
                "steps": steps,
                "measurements": [
                    {"model": n, "batch_size": b, "contender": c, "results": r}
                    for (n, b), runs in measured.items()
                    for c, r in runs.items()
                ],
            },
        )


if __name__ == "__main__":
    main()
