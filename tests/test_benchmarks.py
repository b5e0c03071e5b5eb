"""The benchmarks' own logic: the GPU check's wheel list, the models they time, and the
training-step tables."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import gp1d_models
import gpu_wheels
import training_step

LIST = """
# a comment
Hydra_Core==1.3.8 any   # trailing comment
netCDF4==1.7.5.1.post1 binary

backends==1.9.0 sdist
"""


def test_benchmarked_quick_models_are_the_ones_the_plan_trains():
    from aenp.reproduce import load_plan

    known = gp1d_models.configurations()
    plan = load_plan("gp1d", "quick")
    for key in plan["models"]:
        registry_key, hparams = known[f"{key}@quick"]
        assert registry_key == key
        for override in plan["model_overrides"].get(key, []):
            name, _, value = override.partition("=")
            if name.startswith("model.hparams."):
                assert str(hparams[name.removeprefix("model.hparams.")]) == value, override
    assert (
        known["convcnp@neuralprocesses"]
        == gp1d_models.PEER_CONFIGURATIONS["convcnp@neuralprocesses"]
    )


def test_wheel_list_is_read_with_normalised_names():
    wheels = gpu_wheels.read_list(LIST)
    assert [(w.name, w.version, w.source) for w in wheels] == [
        ("hydra-core", "1.3.8", "any"),
        ("netcdf4", "1.7.5.1.post1", "binary"),
        ("backends", "1.9.0", "sdist"),
    ]
    assert wheels[0].requirement == "hydra-core==1.3.8"


@pytest.mark.parametrize(
    "line",
    [
        "hydra-core 1.3.8 any",  # not pinned
        "hydra-core>=1.3 any",  # not pinned exactly
        "hydra-core==1.3.8",  # no source
        "hydra-core==1.3.8 wheel",  # unknown source
        "hydra-core==1.3.8 any extra",
    ],
)
def test_wheel_list_refuses_a_malformed_line_naming_it(line):
    with pytest.raises(ValueError, match="line 2 .*" + re.escape(line.split()[0])):
        gpu_wheels.read_list("# header\n" + line)


def test_wheel_list_refuses_two_versions_of_a_project():
    with pytest.raises(ValueError, match=r"line 2 .*plum-dispatch again"):
        gpu_wheels.read_list("plum-dispatch==2.10.1 any\nplum_dispatch==2.5.0 any")


def test_folder_problems_name_missing_and_unlisted_wheels():
    wheels = gpu_wheels.read_list(LIST)
    exact = [
        "hydra_core-1.3.8-py3-none-any.whl",
        "netcdf4-1.7.5.1.post1-cp311-abi3-manylinux_2_28_x86_64.whl",
        "backends-1.9.0-py3-none-any.whl",
    ]
    assert gpu_wheels.folder_problems(wheels, exact) == []
    stale = [*exact[1:], "hydra_core-1.3.7-py3-none-any.whl"]
    assert gpu_wheels.folder_problems(wheels, stale) == [
        "missing: hydra-core==1.3.8",
        "not listed: hydra_core-1.3.7-py3-none-any.whl",
    ]


def test_committed_wheel_list_pins_the_peer_and_the_missing_dependencies():
    wheels = {w.name: w for w in gpu_wheels.read_list(gpu_wheels.LIST.read_text())}
    assert wheels["neuralprocesses"].version == "0.2.7"
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime"} <= set(wheels)


def run(rate):
    return {"steps_per_second": rate}


def test_ratios_are_of_medians_numerator_over_denominator():
    runs = {
        "compiled": [run(3.0), run(30.0), run(4.0)],  # median 4, mean 12.3
        "eager": [run(2.0), run(1.0), run(2.0)],  # median 2
    }
    assert training_step.ratio(runs, "compiled", "eager") == pytest.approx(2.0)
    assert training_step.ratio(runs, "eager", "compiled") == pytest.approx(0.5)


def test_ratio_is_missing_where_a_contender_failed_or_did_not_run():
    runs = {"compiled": [{"error": "exit status 1"}], "eager": [run(2.0)]}
    assert training_step.ratio(runs, "compiled", "eager") is None
    assert training_step.ratio(runs, "eager", "baseline") is None


def test_ratio_table_shows_only_pairs_that_ran():
    measured = {
        ("convcnp", 16): {"eager": [run(2.0)], "compiled": [run(5.0)]},
        ("tnp", 16): {"eager": [run(4.0)], "compiled": [{"error": "exit status 1"}]},
    }
    assert training_step.ratio_table(measured).splitlines() == [
        "| model | batch | compiled / eager |",
        "|---|---|---|",
        "| convcnp | 16 | 2.50× |",
        "| tnp | 16 | — |",
    ]


def test_neuralprocesses_runs_only_on_its_own_configuration():
    peer = training_step.AENP_CONVCNP
    assert training_step.is_neuralprocesses_configuration("convcnp", {**peer, "min_std": 1e-3})
    assert not training_step.is_neuralprocesses_configuration("convcnp_approx", peer)
    smaller = {**peer, "points_per_unit": 32}
    assert not training_step.is_neuralprocesses_configuration("convcnp", smaller)


def test_speed_table_tells_failed_from_skipped_measurements():
    measured = {
        ("convcnp", 16): {
            "eager": [{**run(2.0), "parameters": 1000, "warmup_seconds": 0.5}],
            "compiled": [{"error": "exit status 1"}],
            "baseline": [],
        }
    }
    rows = training_step.speed_table(measured).splitlines()[2:]
    assert rows[0].startswith("| convcnp | 16 | eager | 1,000 | 2.0 (2.0–2.0) | 0.5 |")
    assert "failed: exit status 1" in rows[1]
    assert "not measured (time limit)" in rows[2]
