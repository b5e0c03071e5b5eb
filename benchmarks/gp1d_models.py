"""Training and inference speed of every model on the gp1d workload (BENCHMARKS.md).

Batches of 16 tasks, nc ~ U{1..64}, nt = 128, pre-generated (data generation is not timed),
two threads. Each model runs in a fresh process so peak RSS is its own. Prints a Markdown table.

    python benchmarks/gp1d_models.py [--models tnp convcnp ...] [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from harness import WARMUP_STEPS, measure_model, print_table, run_interleaved

PEER_CONFIGURATIONS = {
    # The peers' own configurations (BENCHMARKS.md), built with aenp.
    "convcnp@neuralprocesses": (
        "convcnp",
        {
            "points_per_unit": 64,
            "margin": 0.1,
            "cnn": "unet",
            "channels": 64,
            "num_layers": 6,
            "kernel_size": 5,
        },
    ),
    "convcnp@tnp": (
        "convcnp",
        {
            "points_per_unit": 16,
            "margin": 0.1,
            "cnn": "conv",
            "channels": 32,
            "num_layers": 5,
            "kernel_size": 9,
        },
    ),
    "tnp@tnp": ("tnp", {"embed_dim": 128, "num_heads": 8, "num_layers": 5, "ff_dim": 128}),
}


def configurations() -> dict[str, tuple[str, dict[str, Any]]]:
    """``{name: (registry key, hyper-parameters)}`` of every configuration the scripts know.

    Every model of ``aenp reproduce gp1d`` as its plan builds it at paper size (``tnp``) and
    at quick size (``tnp@quick``), then the peers' configurations.
    """
    from omegaconf import OmegaConf

    from aenp.reproduce import load_plan
    from aenp.train.run import compose_config

    found = {}
    for scale, suffix in (("paper", ""), ("quick", "@quick")):
        plan = load_plan("gp1d", scale)
        for key in plan["models"]:
            overrides = plan["model_overrides"].get(key, [])
            cfg = compose_config(["experiment=gp1d", f"model={key}", *overrides])
            found[key + suffix] = (key, OmegaConf.to_container(cfg.model.hparams, resolve=True))
    return found | PEER_CONFIGURATIONS


def measure(key: str, hparams: dict[str, Any], steps: int, device: str) -> dict:
    """Runs in a child process: one model's figures."""
    from aenp import build_model
    from aenp.data.experiments import get_experiment
    from aenp.data.gp import GPMixture, switching_kernels
    from aenp.train.cpu import configure_cpu

    torch.set_num_threads(2)
    configure_cpu()
    experiment = get_experiment("gp1d")
    generator = torch.Generator().manual_seed(0)
    batches = [
        experiment.sample_train(16, generator).to(device) for _ in range(steps + WARMUP_STEPS)
    ]
    full = GPMixture(switching_kernels(), num_context=(64, 64)).sample(16, generator).batch
    torch.manual_seed(0)
    model = build_model(key, 1, 1, **hparams).to(device)
    return measure_model(model, batches, full.to(device), device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", help="configuration names (default: all)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--configurations", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        key, hparams = json.loads(args.configurations.read_text())[args.child]
        print(json.dumps(measure(key, hparams, args.steps, args.device)))
        return
    # Composed once here: a child composing them too would count Hydra in its peak memory.
    known = configurations()
    models = args.models or list(known)
    unknown = [name for name in models if name not in known]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(known)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "configurations.json"
        path.write_text(json.dumps(known))
        child_args = ["--steps", str(args.steps), "--device", args.device]
        child_args += ["--configurations", str(path)]
        runs = run_interleaved(__file__, models, args.repeats, child_args)
    print(
        f"gp1d workload: batch 16, nc ~ U{{1..64}}, nt = 128, {args.steps} steps × "
        f"{args.repeats} processes, device {args.device}\n"
    )
    print_table(runs, "forward ms, nc=64")


if __name__ == "__main__":
    main()
