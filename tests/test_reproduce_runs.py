"""``reproduce`` with several seeds and runs in processes of their own."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from aenp.errors import InputError, MissingFileError, RunError
from aenp.evaluate.run import load_per_task_loglik
from aenp.reproduce import (
    Job,
    ablate,
    load_plan,
    move_single_run,
    plan_runs,
    reproduce,
    run_processes,
    train_and_evaluate,
)
from aenp.train.run import training_record

MODELS = ["convcnp", "convcnp_approx"]
TINY = [
    "data.num_train_tasks=32",
    "data.num_val_tasks=16",
    "data.num_test_tasks=16",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "model.hparams.channels=4",
    "model.hparams.num_layers=2",
    "model.hparams.points_per_unit=8",
]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread here, as each of two processes gets on two cores: bit-equal runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def serial(tmp_path_factory, one_thread):
    """Both ConvCNPs with seeds 0 and 1, trained one after another in this process."""
    return reproduce("gp1d", "quick", tmp_path_factory.mktemp("serial"), MODELS, TINY, seeds=2)


@pytest.fixture(scope="module")
def parallel(tmp_path_factory, serial, one_thread):
    """The same plan, its ConvCNP (T) runs copied from ``serial`` and its ConvCNP (T̃) runs
    trained two at a time in processes of their own."""
    out = tmp_path_factory.mktemp("parallel")
    shutil.copytree(serial / "convcnp", out / "convcnp")
    return reproduce("gp1d", "quick", out, MODELS, TINY, seeds=2, parallel=2)


def tables(out):
    """The results and comparisons tables of ``results.md`` (what follows them is timing)."""
    markdown = (out / "results.md").read_text()
    return markdown[: markdown.index("Training time")]


def test_every_seed_trains_its_own_run_directory(serial):
    summary = json.loads((serial / "results.json").read_text())
    assert summary["seeds"] == [0, 1]
    runs = [(r["model"], r["seed"], r["run_dir"]) for r in summary["results"]]
    assert runs == [(m, s, str(serial / m / f"seed{s}")) for m in MODELS for s in (0, 1)]
    for model in MODELS:
        seeds = [OmegaConf.load(serial / model / f"seed{s}" / "config.yaml").seed for s in (0, 1)]
        assert seeds == [0, 1]
        first, second = (load_per_task_loglik(serial / model / f"seed{s}") for s in (0, 1))
        assert not np.allclose(first["test"], second["test"])


def test_results_json_and_tables_hold_the_across_seed_figures(serial):
    summary = json.loads((serial / "results.json").read_text())
    markdown = (serial / "results.md").read_text()
    for model in MODELS:
        means = [
            r["splits"]["ood"]["loglik"]["mean"] for r in summary["results"] if r["model"] == model
        ]
        spread = summary["across_seeds"][model]["ood"]["loglik"]
        assert spread["mean"] == pytest.approx(np.mean(means))
        assert spread["stderr"] == pytest.approx(np.std(means, ddof=1) / np.sqrt(2))
        assert spread["num_seeds"] == 2
    assert "| Model | test log-lik | test log-lik, 2 seeds | ood log-lik |" in markdown
    # The paired difference of each seed, from the per-task files, then over seeds.
    per_task = {m: [load_per_task_loglik(serial / m / f"seed{s}") for s in (0, 1)] for m in MODELS}
    gains = [np.mean(a["test"] - b["test"]) for a, b in zip(*per_task.values(), strict=True)]
    gains = -np.asarray(gains)  # approximate minus strict
    figure = f"{gains.mean():.3f} ± {np.std(gains, ddof=1) / np.sqrt(2):.3f}"
    assert "| Δ log-lik (paired), 2 seeds | verdict |" in markdown
    start = "| ConvCNP (T̃) | ConvCNP (T) | test |"
    comparison = next(line for line in markdown.splitlines() if line.startswith(start))
    assert comparison.split(" | ")[4] == figure
    assert "Figures show the seed-0 models." in markdown


def test_parallel_runs_give_the_serial_results(serial, parallel):
    assert tables(parallel) == tables(serial)
    for model in MODELS:
        for seed in (0, 1):
            ours = load_per_task_loglik(parallel / model / f"seed{seed}")
            theirs = load_per_task_loglik(serial / model / f"seed{seed}")
            assert ours.keys() == theirs.keys()
            for split in ours:
                np.testing.assert_array_equal(ours[split], theirs[split])
    # The approximate runs trained in processes of their own, writing their logs; the copied
    # runs were already trained, so only their evaluations ran, in processes of their own.
    log = (parallel / "convcnp_approx" / "seed1" / "train.log").read_text()
    assert "`Trainer.fit` stopped: `max_epochs=1` reached." in log
    assert not (parallel / "convcnp" / "seed0" / "train.log").exists()
    for model in MODELS:
        evaluation = (parallel / model / "seed0" / "evaluate.log").read_text()
        assert f'"model": "{model}"' in evaluation
    copied = training_record(parallel / "convcnp" / "seed0")
    assert copied == training_record(serial / "convcnp" / "seed0")
    summary = json.loads((parallel / "results.json").read_text())
    assert summary["parallel"] == 2


def test_seeds_start_at_the_seed_override_which_is_given_once(tmp_path):
    plan = load_plan("gp1d", "quick")
    runs = plan_runs("gp1d", plan, MODELS, tmp_path, ["seed=5", *TINY], 2)
    assert list(runs) == [
        ("convcnp", 5),
        ("convcnp", 6),
        ("convcnp_approx", 5),
        ("convcnp_approx", 6),
    ]
    run = runs["convcnp_approx", 6]
    assert run.run_dir == tmp_path / "convcnp_approx" / "seed6"
    assert run.name == "convcnp_approx seed 6"
    assert [a for a in run.args if a.startswith("seed=")] == ["seed=6"]
    assert f"run_dir={run.run_dir}" in run.args


@pytest.mark.parametrize(("name", "value"), [("seeds", 0), ("parallel", 0), ("parallel", -2)])
def test_counts_must_be_positive(tmp_path, name, value):
    with pytest.raises(InputError, match=f"{name} must be a positive integer, got {value}"):
        reproduce("gp1d", "quick", tmp_path, MODELS, TINY, **{name: value})
    assert list(tmp_path.iterdir()) == []


def test_an_empty_model_list_is_refused_before_anything_is_written(tmp_path):
    plan = ", ".join(load_plan("gp1d", "quick")["models"])
    with pytest.raises(InputError) as error:
        reproduce("gp1d", "quick", tmp_path / "out", [], TINY)
    assert str(error.value) == (
        f"models must name at least one model, got none (the gp1d plan names {plan})"
    )
    with pytest.raises(InputError, match="values must hold at least one value of p_drop, got none"):
        ablate("gp1d", "quick", "convcnp_approx", "p_drop", [], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_run_of_the_layout_before_seeds_moves_to_its_seed_directory(tmp_path):
    old = tmp_path / "convcnp"
    old.mkdir()
    (old / "config.yaml").write_text("seed: 3\n")
    (old / "model").mkdir()
    move_single_run(old)
    assert sorted(p.name for p in old.iterdir()) == ["seed3"]
    assert (old / "seed3" / "model").is_dir()
    move_single_run(old)  # nothing more to move
    assert sorted(p.name for p in tmp_path.iterdir()) == ["convcnp"]
    # A move interrupted between its two renames is finished.
    moving = tmp_path / ".tnp.moving"
    moving.mkdir()
    (moving / "config.yaml").write_text("seed: 0\n")
    move_single_run(tmp_path / "tnp")
    assert (tmp_path / "tnp" / "seed0" / "config.yaml").is_file()
    assert not moving.exists()


def python(code):
    return [sys.executable, "-c", code]


def test_a_failed_run_is_named_with_its_log_after_the_running_ones_finish(tmp_path):
    threads = "os.environ['OMP_NUM_THREADS']"
    slow = f"import os, time; time.sleep(1); open({str(tmp_path / 'slow')!r}, 'w').write({threads})"
    jobs = [
        Job("[1/3] slow", python(slow), tmp_path / "slow.log"),
        Job("[2/3] broken", python("import sys; print('boom'); sys.exit(3)"), tmp_path / "b.log"),
        Job("[3/3] later", python(f"open({str(tmp_path / 'later')!r}, 'w')"), tmp_path / "l.log"),
    ]
    with pytest.raises(RunError) as error:
        run_processes(jobs, parallel=2, threads=3)
    message = str(error.value)
    assert message.startswith(
        "1 of 3 processes failed; 1 not started: [2/3] broken (exit status 3: boom;"
    )
    assert f"log: {tmp_path / 'b.log'})" in message
    assert (tmp_path / "slow").read_text() == "3"  # finished, with its threads
    assert not (tmp_path / "later").exists()


def test_a_job_after_another_waits_for_it_and_lets_later_jobs_start_first(tmp_path):
    first, other = tmp_path / "first", tmp_path / "other"
    # "first" records whether "third" ran while it did.
    ran = f"str(os.path.exists({str(other)!r}))"
    slow = f"import os, time; time.sleep(1); open({str(first)!r}, 'w').write({ran})"
    check = f"import os, sys; sys.exit(0 if os.path.exists({str(first)!r}) else 5)"
    jobs = [
        Job("first", python(slow), tmp_path / "1.log"),
        Job("second", python(check), tmp_path / "2.log", after="first"),
        Job("third", python(f"open({str(other)!r}, 'w')"), tmp_path / "3.log"),
    ]
    run_processes(jobs, parallel=2, threads=1)  # "second" fails if it starts before "first" ends
    assert first.read_text() == "True"
    early = Job("second", python("pass"), tmp_path / "2.log", after="third")
    with pytest.raises(ValueError, match="second comes after 'third', which is not a job before"):
        run_processes([jobs[0], early, jobs[2]], parallel=2, threads=1)


def test_runs_start_in_the_plans_start_order_and_tables_keep_the_plans_order(
    tmp_path, monkeypatch, caplog, one_thread
):
    plan = load_plan("gp1d", "quick")
    monkeypatch.setattr(
        "aenp.reproduce.load_plan", lambda *args: {**plan, "start_order": ["convcnp_approx"]}
    )
    with caplog.at_level("INFO", logger="aenp.reproduce"):
        out = reproduce("gp1d", "quick", tmp_path, MODELS, TINY)
    messages = [record.getMessage() for record in caplog.records]
    started = [message.split(":")[0] for message in messages if "aenp train" in message]
    assert started == ["[1/2] convcnp_approx seed 0", "[2/2] convcnp seed 0"]
    summary = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in summary["results"]] == ["convcnp", "convcnp_approx"]


@pytest.mark.parametrize("order", [["convcnp", "convcnp"], ["gp"]])
def test_a_start_order_naming_other_models_or_one_twice_is_refused(tmp_path, monkeypatch, order):
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "gp1d.yaml").write_text(
        OmegaConf.to_yaml(
            {"models": MODELS, "scales": {"quick": {"overrides": [], "start_order": order}}}
        )
    )
    monkeypatch.setattr("aenp.reproduce.PLAN_DIR", plans)
    with pytest.raises(InputError, match="start_order must name models of the plan"):
        load_plan("gp1d", "quick")


def test_parallel_evaluations_queue_behind_every_training_each_after_its_own(tmp_path, monkeypatch):
    runs = list(plan_runs("gp1d", load_plan("gp1d", "quick"), MODELS, tmp_path, TINY, 1).values())
    queued = []
    monkeypatch.setattr("aenp.reproduce.run_processes", lambda jobs, *_: queued.extend(jobs))
    with pytest.raises(MissingFileError, match="holds no evaluation"):  # nothing ran
        train_and_evaluate(runs, parallel=2)
    trainings = ["[1/2] convcnp seed 0", "[2/2] convcnp_approx seed 0"]
    assert [job.label for job in queued] == [*trainings, *(f"{t} evaluation" for t in trainings)]
    assert [job.after for job in queued] == [None, None, *trainings]
    for run, job in zip(runs, queued[2:], strict=True):
        assert job.argv[-2:] == ["evaluate", str(run.run_dir)]
        assert job.log == run.run_dir / "evaluate.log"
