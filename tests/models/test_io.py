import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import aenp
from aenp.testing import random_batch

from .test_contract import SMALL_CONVCNP, SMALL_TNP


@pytest.mark.parametrize(
    ("key", "hparams"),
    [("tnp", SMALL_TNP), ("tetnp_approx", SMALL_TNP), ("convcnp_approx", SMALL_CONVCNP)],
)
def test_round_trip_reproduces_predictions_exactly(tmp_path, key, hparams):
    model = aenp.build_model(key, 1, 2, **hparams)
    for p in model.parameters():  # move away from the (partly zero) initialisation
        torch.nn.init.normal_(p, std=0.1)
    aenp.save(model.eval(), tmp_path / "m")
    loaded = aenp.load(tmp_path / "m").eval()
    assert aenp.model_name(loaded) == key
    batch = random_batch(dim_y=2)
    torch.testing.assert_close(loaded(batch).mean, model(batch).mean, rtol=0, atol=0)
    torch.testing.assert_close(loaded(batch).stddev, model(batch).stddev, rtol=0, atol=0)


def test_round_trip_keeps_float64(tmp_path):
    model = aenp.build_model("convcnp", 1, 1, **SMALL_CONVCNP).double()
    aenp.save(model, tmp_path)
    assert next(aenp.load(tmp_path).parameters()).dtype == torch.float64


def test_manual_approximate_round_trips(tmp_path):
    model = aenp.approximate(aenp.build_model("tetnp", 1, 1, **SMALL_TNP), num_fixed_inputs=3)
    aenp.save(model, tmp_path)
    loaded = aenp.load(tmp_path)
    assert loaded.config["approximate"]["num_fixed_inputs"] == 3


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        aenp.load(tmp_path / "nowhere")


def test_corrupt_weights_are_a_clear_error(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        aenp.load(tmp_path)


def test_truncated_weights_are_a_clear_error(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        aenp.load(tmp_path)


def test_mismatched_weights_never_load_partially(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    name = next(iter(weights))
    weights[name] = torch.zeros(3, 3)
    del weights[sorted(weights)[-1]]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"has shape \(3, 3\).*|missing"):
        aenp.load(tmp_path)


def test_weights_of_another_model_are_refused(tmp_path):
    aenp.save(aenp.build_model("tetnp", 1, 1, **SMALL_TNP), tmp_path / "a")
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(ValueError, match="does not match the 'tetnp' model"):
        aenp.load(tmp_path / "a")


def test_corrupt_config_is_a_clear_error(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        aenp.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"key": "tnp"}))
    with pytest.raises(ValueError, match="lacks required field"):
        aenp.load(tmp_path)
