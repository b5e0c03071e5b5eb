"""The ``aenp`` command line.

``aenp train [overrides]``       train one model (Hydra: ``experiment=gp1d model=convcnp_approx``)
``aenp evaluate RUN_DIR``        evaluate a finished run on its test splits
``aenp reproduce EXPERIMENT``    train and evaluate every model of an experiment; table, figures
``aenp ablate EXPERIMENT``       one model over values of num_fixed_inputs or p_drop; a table
``aenp predict RUN_DIR``         predict at target coordinates from context observations (climate)
``aenp data export EXPERIMENT``  write an evaluation split to a portable file
``aenp data smoke --out DIR``    simulate 2-D smoke plumes (PhiFlow) into a zarr store
``aenp models``                  list the registry keys
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from aenp.errors import AenpError, InputError
from aenp.train.cpu import configure_cpu


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _train_with_hydra(args: list[str]) -> None:
    """Runs ``aenp train`` through Hydra so overrides, ``--multirun`` and ``--cfg`` all work."""
    from aenp.train import __main__ as train_main

    # Launchers of further processes (DDP) re-run sys.argv: make it the training module.
    sys.argv = [train_main.__file__, *args]
    train_main.main()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aenp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="train one model (Hydra overrides; see `aenp train --help`)")
    _add_evaluate_command(commands)
    _add_reproduce_command(commands)
    _add_ablate_command(commands)
    _add_predict_command(commands)
    _add_data_commands(commands)
    commands.add_parser("models", help="list the registry keys")
    return parser


def _add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate a finished training run")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument(
        "--num-tasks", type=positive_int, default=None, help="tasks per split (default: the run's)"
    )
    evaluate.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (the GPU where there is one), cpu, cuda, cuda:1, ...",
    )


def _add_reproduce_command(commands: argparse._SubParsersAction) -> None:
    reproduce = commands.add_parser(
        "reproduce", help="train and evaluate every model of an experiment"
    )
    reproduce.add_argument("experiment")
    reproduce.add_argument("--scale", choices=("quick", "paper"), default="quick")
    reproduce.add_argument(
        "--out", type=Path, default=None, help="default: results/<experiment>-<scale>"
    )
    reproduce.add_argument(
        "--models", default=None, help="a comma-separated subset of the plan's models"
    )
    reproduce.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        metavar="N",
        help="train every model with N seeds, s to s+N-1 (s: the seed= override, default 0), "
        "each in OUT/<model>/seed<k>; tables add the mean ± standard error across seeds "
        "(default 1)",
    )
    _add_parallel_option(reproduce)
    reproduce.add_argument(
        "overrides", nargs="*", help="Hydra overrides for every model, e.g. trainer.max_epochs=1"
    )
    _add_climate_options(reproduce)


def _add_ablate_command(commands: argparse._SubParsersAction) -> None:
    ablate = commands.add_parser(
        "ablate", help="train an approximate model over values of num_fixed_inputs or p_drop"
    )
    ablate.add_argument("experiment")
    ablate.add_argument("--model", required=True, help="an approximate model, e.g. convcnp_approx")
    group = ablate.add_mutually_exclusive_group(required=True)
    group.add_argument("--num-fixed-inputs", type=int, nargs="+", metavar="B")
    group.add_argument("--p-drop", type=float, nargs="+", metavar="P")
    ablate.add_argument("--scale", choices=("quick", "paper"), default="quick")
    ablate.add_argument(
        "--out", type=Path, default=None, help="default: results/<experiment>-ablation-<parameter>"
    )
    _add_parallel_option(ablate)
    ablate.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    _add_climate_options(ablate)


def _add_predict_command(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict", help="predict temperature with a trained climate model (mean and std)"
    )
    predict.add_argument("run_dir", type=Path, help="a run directory of `aenp train`")
    predict.add_argument(
        "--context", type=Path, required=True, help="observations: netCDF/zarr grid or CSV"
    )
    predict.add_argument(
        "--targets", type=Path, required=True, help="where to predict: netCDF/zarr grid or CSV"
    )
    predict.add_argument(
        "--out", type=Path, required=True, help="a new .nc, .zarr or .csv (for CSV targets) file"
    )
    predict.add_argument("--variable", default=None, help="the context's data variable")
    predict.add_argument("--chunk-size", type=positive_int, default=65_536, help="targets per pass")
    predict.add_argument(
        "--block-time", type=positive_int, default=8, help=".zarr out: time steps per block"
    )
    predict.add_argument(
        "--block-side", type=positive_int, default=512, help=".zarr out: cells per block side"
    )
    predict.add_argument(
        "--elevation",
        default=None,
        help="4-D models: an elevation file, or 'terrain' for the built-in terrain map",
    )


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="data utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    export = data_commands.add_parser(
        "export", help="write an evaluation split with its ground truth"
    )
    export.add_argument("experiment", choices=("gp1d",))
    export.add_argument("--split", default="test", help="val, test or ood")
    export.add_argument("--out", type=Path, required=True, help="a .npz or .nc file")
    export.add_argument("--num-tasks", type=positive_int, default=None)

    smoke = data_commands.add_parser("smoke", help="simulate 2-D smoke plumes with PhiFlow")
    smoke.add_argument("--num-train", type=positive_int, default=1024)
    smoke.add_argument("--num-test", type=positive_int, default=128)
    smoke.add_argument("--resolution", type=positive_int, default=64)
    smoke.add_argument(
        "--steps", type=positive_int, default=None, help="simulation steps (default 60)"
    )
    smoke.add_argument(
        "--time-step", type=float, default=None, help="simulation time per step (default 0.05)"
    )
    smoke.add_argument("--seed", type=int, default=0)
    smoke.add_argument(
        "--batch-size", type=positive_int, default=32, help="simulations run together"
    )
    smoke.add_argument("--out", type=Path, required=True, help="directory of the store")


def _add_parallel_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parallel",
        type=positive_int,
        default=1,
        metavar="N",
        help="train up to N runs at once, each in its own process with 1/N of the CPU threads "
        "(sharing the GPU, if any) and its output in <run dir>/train.log (default 1: one "
        "after another, in this process)",
    )


def _add_climate_options(parser: argparse.ArgumentParser) -> None:
    """Options of the climate experiment, turned into overrides by :func:`_climate_overrides`."""
    group = parser.add_argument_group("climate experiment")
    group.add_argument(
        "--dims",
        type=int,
        choices=(2, 3, 4),
        default=None,
        help="2: (lat, lon); 3: (time, lat, lon); 4: (time, lat, lon, elevation)",
    )
    group.add_argument(
        "--elevation",
        default=None,
        help="for --dims 4: an elevation file, or 'terrain' for the built-in terrain map "
        "(default: the data file's elevation variable, else the terrain map)",
    )
    group.add_argument(
        "--data", default=None, help="a netCDF file or zarr store (default: offline HadCM3)"
    )
    group.add_argument(
        "--variable", default=None, help="the data variable (default: the only gridded one)"
    )
    group.add_argument(
        "--train-region", default=None, help="region name or south,north,west,east box"
    )
    group.add_argument(
        "--ood-region", default=None, help="region name or south,north,west,east box"
    )


def _climate_overrides(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The experiment config and Hydra overrides that the climate options stand for."""
    options = {
        "data": args.data,
        "variable": args.variable,
        "train_region": args.train_region,
        "ood_region": args.ood_region,
        "elevation": args.elevation,
    }
    given = {k: v for k, v in options.items() if v is not None}
    if args.experiment != "climate":
        if given or args.dims is not None:
            flags = [f"--{k.replace('_', '-')}" for k in given] + ["--dims"] * (
                args.dims is not None
            )
            raise InputError(f"{', '.join(flags)} apply to the climate experiment only")
        return args.experiment, []
    if args.elevation is not None and args.dims != 4:
        raise InputError("--elevation applies to --dims 4 only")
    experiment = {3: "climate3d", 4: "climate4d"}.get(args.dims, "climate")
    return experiment, [f"experiment.options.{k}='{v}'" for k, v in given.items()]


HYDRA_OVERRIDE = re.compile(r"[+~]?[A-Za-z_][\w.]*=")
"""A Hydra override such as ``trainer.max_epochs=1`` (``+key=`` and ``~key=`` too)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of every command but ``train``.

    ``reproduce`` and ``ablate`` take Hydra overrides anywhere on the line, even after an
    option with several values such as ``--p-drop 0 0.5``; they end up in ``overrides``.
    """
    parser = _parser()
    overrides = []
    if argv and argv[0] in ("reproduce", "ablate"):
        overrides = [a for a in argv if HYDRA_OVERRIDE.match(a)]
        argv = [a for a in argv if not HYDRA_OVERRIDE.match(a)]
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aenp`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    configure_cpu()
    if argv and argv[0] == "train":
        _train_with_hydra(argv[1:])
        return 0
    args = parse_args(argv)
    try:
        return _dispatch(args)
    except (AenpError, ValueError, FileNotFoundError) as error:
        print(f"aenp {args.command}: error: {error}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    from aenp.evaluate.run import evaluate_run
    from aenp.files import to_json

    print(to_json(evaluate_run(args.run_dir, args.num_tasks, args.device)))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from aenp.reproduce import reproduce

    experiment, overrides = _climate_overrides(args)
    out = args.out or Path("results") / f"{experiment}-{args.scale}"
    models = args.models.split(",") if args.models else None
    reproduce(
        experiment,
        args.scale,
        out,
        models,
        [*overrides, *args.overrides],
        seeds=args.seeds,
        parallel=args.parallel,
    )
    print(f"Results: {out / 'results.md'}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from aenp.reproduce import ablate

    parameter = "num_fixed_inputs" if args.num_fixed_inputs else "p_drop"
    values = args.num_fixed_inputs or args.p_drop
    experiment, overrides = _climate_overrides(args)
    out = args.out or Path("results") / f"{experiment}-ablation-{parameter}"
    ablate(
        experiment,
        args.scale,
        args.model,
        parameter,
        values,
        out,
        [*overrides, *args.overrides],
        parallel=args.parallel,
    )
    print(f"Ablation: {out / 'ablation.md'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from aenp.prediction import predict_files

    predict_files(
        args.run_dir,
        args.context,
        args.targets,
        args.out,
        args.variable,
        args.chunk_size,
        args.elevation,
        args.block_time,
        args.block_side,
    )
    print(f"Wrote {args.out}")
    return 0


def _export_gp_tasks(args: argparse.Namespace) -> int:
    from aenp.data.gp import (
        GP1D_NUM_TASKS,
        check_export_path,
        export_tasks,
        gp1d_generator,
        gp1d_split,
    )

    check_export_path(args.out)  # before the minutes the tasks and ground truth take
    num_tasks = GP1D_NUM_TASKS if args.num_tasks is None else args.num_tasks
    items = gp1d_split(args.split, num_tasks)
    export_tasks(args.out, items, gp1d_generator(args.split))
    print(f"Wrote {sum(len(t) for t, _ in items)} {args.split} tasks to {args.out}")
    return 0


def _simulate_smoke(args: argparse.Namespace) -> int:
    from aenp.data.smoke import SimulationError, SmokeSettings, generate

    options = {"num_steps": args.steps, "time_step": args.time_step}
    settings = SmokeSettings(
        resolution=args.resolution,
        seed=args.seed,
        **{name: value for name, value in options.items() if value is not None},
    )
    try:
        generate(args.out, args.num_train, args.num_test, settings, args.batch_size)
    except SimulationError as error:
        print(f"aenp data smoke: error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {args.num_train + args.num_test} plumes to {args.out}")
    return 0


def _list_models(args: argparse.Namespace) -> int:
    from aenp.models.registry import model_keys

    print("\n".join(model_keys()))
    return 0


_COMMANDS = {
    "evaluate": _evaluate,
    "reproduce": _reproduce,
    "ablate": _ablate,
    "predict": _predict,
    "data export": _export_gp_tasks,
    "data smoke": _simulate_smoke,
    "models": _list_models,
}
"""Each subcommand but ``train`` (Hydra's), by its words on the command line."""


def _dispatch(args: argparse.Namespace) -> int:
    words = f"{args.command} {args.data_command}" if args.command == "data" else args.command
    return _COMMANDS[words](args)


if __name__ == "__main__":
    sys.exit(main())
