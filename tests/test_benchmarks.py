"""The benchmarks' own logic: the GPU check's wheel list, the models they time, the
training-step tables, what they count of a network, and that contenders compute one map."""

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import conv_layout
import gp1d_models
import gpu_wheels
import harness
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


def test_version_skew_names_listed_distributions_installed_at_another_version():
    here = importlib.metadata.version("numpy")
    wheels = gpu_wheels.read_list(
        f"numpy=={here} binary\npytest==0.1 any\nno-such-project==1.0 any\n"
    )
    pytest_here = importlib.metadata.version("pytest")
    assert gpu_wheels.version_skew(wheels) == [f"pytest {pytest_here} here, 0.1 in the wheels"]


def test_committed_wheel_list_pins_the_peer_and_the_missing_dependencies():
    wheels = {w.name: w for w in gpu_wheels.read_list(gpu_wheels.LIST.read_text())}
    assert wheels["neuralprocesses"].version == "0.2.7"
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime"} <= set(wheels)


def test_the_gpu_image_with_the_listed_wheels_imports_what_the_gpu_check_runs():
    wheels = gpu_wheels.read_list(gpu_wheels.LIST.read_text())
    if skew := gpu_wheels.version_skew(wheels):
        # Python 3.12 resolves newer releases than the wheels' (which CI's Python 3.11 gets).
        pytest.skip(f"this Python's packages are not the wheels': {'; '.join(skew)}")
    image = gpu_wheels.read_names(gpu_wheels.IMAGE.read_text())
    listed = {w.name for w in wheels}
    assert gpu_wheels.image_problem(image | listed) is None
    # Without its wheel, aenp's commands stop at their imports on the GPU machine.
    problem = gpu_wheels.image_problem(image | listed - {"cf-xarray"})
    assert problem == "ModuleNotFoundError: No module named 'cf_xarray' on the GPU machine"


def test_only_wheels_this_python_can_install_are_installed():
    from packaging.tags import sys_tags

    here = next(iter(sys_tags()))
    names = [
        "pure-1.0-py3-none-any.whl",
        f"native-1.0-{here.interpreter}-{here.abi}-{here.platform}.whl",
        "old-1.0-cp27-cp27mu-manylinux1_x86_64.whl",
    ]
    assert gpu_wheels.installable(names) == names[:2]


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


def test_ratio_table_is_empty_where_no_pair_ran():
    assert training_step.ratio_table({("convcnp", 16): {"eager": [run(2.0)]}}) == ""


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


def test_plan_times_only_the_chosen_contenders():
    known = gp1d_models.configurations()
    chosen = training_step.plan(["convcnp@quick"], known, True, False, ["eager", "baseline"])
    assert chosen == {"convcnp@quick": ["eager", "baseline"]}
    every = training_step.plan(["convcnp@quick"], known, True, False)
    assert every == {"convcnp@quick": ["eager", "compiled", "baseline"]}


def test_unet_notes_bound_the_ratios_by_the_unet_time():
    measured = {
        ("convcnp", 16): {
            "eager": [{**run(50.0), "unet_ms": 10.0}],  # a 20 ms step, half of it the U-Net
            "baseline": [run(25.0)],  # a 40 ms step: at most 40 / 10 = 4x
        },
        ("tnp", 16): {"eager": [{**run(10.0), "unet_ms": None}], "baseline": [run(5.0)]},
    }
    assert training_step.unet_notes(measured) == [
        "* convcnp, batch 16: U-Net 10.0 ms of the eager step's 20.0 ms (50%); "
        "eager can be at most 4.00× baseline"
    ]


def test_layer_macs_count_each_call_of_each_layer():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(3, 5, 7, padding=3)
    transposed = torch.nn.ConvTranspose1d(5, 6, 5, stride=2, padding=2, output_padding=1)
    linear = torch.nn.Linear(6, 2)
    model = torch.nn.Sequential(conv, transposed)
    h = torch.randn(2, 3, 20)

    def run():
        out = model(h)  # [2, 6, 40]
        linear(out.transpose(1, 2))  # not in the model: not counted
        model(h)

    conv_macs = 2 * 5 * 20 * 3 * 7  # outputs x input channels x kernel
    # A transposed convolution is the adjoint of the convolution from its output back to its
    # input, and costs what that convolution costs: its outputs (our inputs) x its inputs'
    # channels (our output channels) x kernel.
    adjoint = torch.nn.Conv1d(6, 5, 5, stride=2, padding=2)
    assert adjoint(torch.randn(2, 6, 40)).shape == (2, 5, 20)
    transposed_macs = 2 * 5 * 20 * 6 * 5
    assert harness.layer_macs(model, run) == 2 * (conv_macs + transposed_macs)
    assert harness.layer_macs(linear, lambda: linear(torch.randn(4, 3, 6))) == 4 * 3 * 2 * 6
    assert not any(m._forward_hooks for m in model.modules())  # the hooks are removed


def test_unet_milliseconds_runs_the_unet_on_the_shapes_and_layouts_it_saw():
    from aenp import Batch, build_model
    from aenp.nn.cnn import UNet

    torch.manual_seed(0)
    model = build_model("convcnp", 1, 1, points_per_unit=8, channels=4, num_layers=2)
    (unet,) = [m for m in model.modules() if isinstance(m, UNet)]
    batches = [
        Batch(torch.rand(2, n, 1) * 4 - 2, torch.randn(2, n, 1), torch.rand(2, 5, 1) * 8 - 4)
        for n in (3, 7)
    ]
    seen = []
    unet.register_forward_hook(
        lambda module, args, out: seen.append((args[0].shape, args[0].stride()))
    )
    for batch in batches:
        model(batch)
    expected = list(seen)
    seen.clear()
    repeats = 2
    assert harness.unet_milliseconds(model, batches, model, repeats=repeats) > 0
    # One pass to read the shapes, one untimed pass, then the timed ones, each over every batch.
    assert seen == expected * (2 + repeats)
    assert all(p.grad is None for p in model.parameters())
    tnp = build_model("tnp", 1, 1, embed_dim=8, num_heads=2, num_layers=1, ff_dim=8)
    assert harness.unet_milliseconds(tnp, batches, tnp) is None


def test_conv_layout_times_the_same_unet_map_in_both_layouts():
    from aenp.nn.cnn import UNet

    torch.manual_seed(0)
    unet = UNet(1, 4, 3, conv_layout.KERNEL).double()
    h = torch.randn(2, 32, 4, dtype=torch.float64).movedim(-1, 1)
    torch.testing.assert_close(conv_layout.one_d_forward(unet, h), unet(h))


def test_alternating_medians_take_turns_after_the_warmup():
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    medians = harness.alternating_medians(steps, repeats=3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert set(medians) == {"a", "b"} and all(ms >= 0 for ms in medians.values())


def test_speedup_row_puts_the_first_contender_over_the_second(monkeypatch):
    monkeypatch.setattr(harness, "alternating_medians", lambda steps, repeats: {"b": 3.0, "a": 1.5})
    assert (
        harness.speedup_row("step", {"b": None, "a": None}, 5) == "| step | 3.00 | 1.50 | 2.00× |"
    )
