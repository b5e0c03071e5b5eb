import hashlib
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import aenp
from aenp.models import io
from aenp.testing import random_batch

from .test_contract import SMALL_BY_KEY, SMALL_CONVCNP, SMALL_TNP
from .test_registry import STRICT_COUNTERPARTS, dim_x_of


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


DEFAULT_APPROXIMATE = {"num_fixed_inputs": 4, "p_drop": 0.5, "domain": None, "hidden": [64, 64]}
"""The ``approximate`` section a model made approximate with default arguments saves."""


@pytest.mark.parametrize("key", aenp.model_keys())
def test_every_model_saves_the_same_config_and_loads(tmp_path, key):
    """The config.json format is fixed: models saved by earlier versions must keep loading."""
    base = key.removesuffix("_approx")
    model = aenp.build_model(key, dim_x_of(key), 1, **SMALL_BY_KEY[base])
    aenp.save(model, tmp_path, metadata={"note": "x"})
    expected = {
        "format_version": 1,
        "name": key,
        "key": base,
        "dim_x": dim_x_of(key),
        "dim_y": 1,
        "hparams": SMALL_BY_KEY[base],
        **({"approximate": DEFAULT_APPROXIMATE} if key in STRICT_COUNTERPARTS else {}),
        "metadata": {"note": "x"},
        "weights_sha256": hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest(),
    }
    assert json.loads((tmp_path / "config.json").read_text()) == expected
    loaded = aenp.load(tmp_path)
    assert aenp.model_name(loaded) == key
    assert loaded.config == {k: expected[k] for k in ("key", "dim_x", "dim_y", "hparams")} | (
        {"approximate": DEFAULT_APPROXIMATE} if key in STRICT_COUNTERPARTS else {}
    )


def test_a_config_written_by_hand_in_the_saved_format_loads(tmp_path):
    """Fixed inputs over the gridded input only; the channel input's bounds are (None, None)."""
    config = {
        "format_version": 1,
        "name": "convcnp_approx",
        "key": "convcnp",
        "dim_x": 2,
        "dim_y": 1,
        "hparams": {**SMALL_BY_KEY["convcnp"], "channel_inputs": 1},
        "approximate": {
            "num_fixed_inputs": 2,
            "p_drop": 0.25,
            "domain": [[-1.0, 1.0], [None, None]],
            "hidden": [8],
        },
        "metadata": {},
    }
    hparams = {**config["hparams"], **config["approximate"]}
    model = aenp.build_model("convcnp_approx", 2, 1, **hparams)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = aenp.load(tmp_path)
    assert loaded.config == {
        k: config[k] for k in ("key", "dim_x", "dim_y", "hparams", "approximate")
    }
    assert loaded.backbone.grid_dims == 1 and loaded.backbone.fixed_inputs.p_drop == 0.25
    assert loaded.backbone.fixed_inputs.domain.tolist() == [[-1.0, 1.0]]


def test_round_trip_keeps_float64(tmp_path):
    model = aenp.build_model("convcnp", 1, 1, **SMALL_CONVCNP).double()
    aenp.save(model, tmp_path)
    assert next(aenp.load(tmp_path).parameters()).dtype == torch.float64


def test_manual_approximate_round_trips(tmp_path):
    model = aenp.build_model("tetnp", 1, 1, **SMALL_TNP)
    assert "approximate" not in model.config
    aenp.approximate(model, num_fixed_inputs=3, p_drop=1, domain=[(-1, 2)], hidden=(4,))
    aenp.save(model, tmp_path)
    loaded = aenp.load(tmp_path)
    assert aenp.model_name(loaded) == "tetnp_approx"
    assert loaded.config["approximate"] == {
        "num_fixed_inputs": 3,
        "p_drop": 1,
        "domain": [[-1.0, 2.0]],
        "hidden": [4],
    }


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        aenp.load(tmp_path / "nowhere")


def edit_config(directory, **changes):
    """Rewrites fields of a saved config; a value of None removes the field."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


def replace_weights(directory, weights):
    """Writes ``weights`` and records their checksum, as a complete save of them would."""
    save_file(weights, directory / "model.safetensors")
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    edit_config(directory, weights_sha256=digest)


def truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    "corrupt", [lambda path: path.write_bytes(b"not a safetensors file"), truncate]
)
def test_corrupt_weights_are_a_clear_error(tmp_path, corrupt):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    corrupt(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors is not the weights file .*config"):
        aenp.load(tmp_path)
    edit_config(tmp_path, weights_sha256=None)  # as saved before checksums were recorded
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        aenp.load(tmp_path)


def test_saves_without_a_checksum_still_load(tmp_path):
    model = aenp.build_model("tetnp", 1, 1, **SMALL_TNP).eval()
    aenp.save(model, tmp_path)
    edit_config(tmp_path, weights_sha256=None)
    batch = random_batch()
    torch.testing.assert_close(aenp.load(tmp_path).eval()(batch).mean, model(batch).mean)


def test_one_mis_shaped_tensor_is_named(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    name = sorted(weights)[3]
    assert weights[name].shape != (3, 3)
    weights[name] = torch.zeros(3, 3)
    replace_weights(tmp_path, weights)
    with pytest.raises(ValueError, match=rf"{re.escape(name)} has shape \(3, 3\), expected "):
        aenp.load(tmp_path)


def test_mismatched_weights_never_load_partially(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    missing = sorted(weights)[-1]
    del weights[missing]
    weights["extra.weight"] = torch.zeros(2)
    replace_weights(tmp_path, weights)
    with pytest.raises(ValueError, match=rf"missing {re.escape(missing)}; unexpected extra"):
        aenp.load(tmp_path)


def test_weights_of_another_model_are_refused(tmp_path):
    aenp.save(aenp.build_model("tetnp", 1, 1, **SMALL_TNP), tmp_path / "a")
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(ValueError, match="not the weights file"):
        aenp.load(tmp_path / "a")
    edit_config(tmp_path / "a", weights_sha256=None)
    with pytest.raises(ValueError, match="does not match the 'tetnp' model"):
        aenp.load(tmp_path / "a")


def test_non_finite_weights_are_refused_by_name(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    first, second = sorted(weights)[:2]
    weights[first].view(-1)[0] = torch.nan
    weights[second].view(-1)[-1] = -torch.inf
    replace_weights(tmp_path, weights)
    with pytest.raises(
        ValueError,
        match=rf"NaN or infinite values in {first}; {second}, so the model cannot predict: its "
        "training diverged or the file was altered; retrain or restore it",
    ):
        aenp.load(tmp_path)


def test_interrupted_save_is_refused_and_the_next_save_succeeds(tmp_path, monkeypatch):
    old = aenp.build_model("tnp", 1, 1, **SMALL_TNP).eval()
    torch.manual_seed(1)
    new = aenp.build_model("tnp", 1, 1, **SMALL_TNP).eval()
    aenp.save(old, tmp_path)
    written = io.atomic_write

    def killed_before_the_config(path):
        if path.name == "config.json":
            raise KeyboardInterrupt
        return written(path)

    monkeypatch.setattr(io, "atomic_write", killed_before_the_config)
    with pytest.raises(KeyboardInterrupt):
        aenp.save(new, tmp_path)
    # New weights beside the old config: refused, naming both files.
    with pytest.raises(
        ValueError, match=r"model\.safetensors is not the weights file .*config\.json"
    ):
        aenp.load(tmp_path)
    monkeypatch.undo()
    aenp.save(new, tmp_path)
    batch = random_batch()
    torch.testing.assert_close(aenp.load(tmp_path).eval()(batch).mean, new(batch).mean)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_unserialisable_metadata_leaves_the_saved_model_intact(tmp_path):
    model = aenp.build_model("tnp", 1, 1, **SMALL_TNP).eval()
    aenp.save(model, tmp_path)
    other = aenp.build_model("tnp", 1, 1, **{**SMALL_TNP, "num_layers": 1})
    with pytest.raises(ValueError, match="metadata must be JSON-serialisable"):
        aenp.save(other, tmp_path, metadata={"loss": float("nan")})
    batch = random_batch()
    torch.testing.assert_close(aenp.load(tmp_path).eval()(batch).mean, model(batch).mean)


def test_save_onto_a_file_is_refused(tmp_path):
    (tmp_path / "m").write_text("mine")
    with pytest.raises(ValueError, match="is a file; a model is saved as a folder"):
        aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path / "m")
    assert (tmp_path / "m").read_text() == "mine"


def test_unknown_or_missing_devices_are_named(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    with pytest.raises(ValueError, match=r"map_location must name a device.*'gpu'"):
        aenp.load(tmp_path, map_location="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available on this machine"):
            aenp.load(tmp_path, map_location="cuda")


def test_corrupt_config_is_a_clear_error(tmp_path):
    aenp.save(aenp.build_model("tnp", 1, 1, **SMALL_TNP), tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        aenp.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"key": "tnp"}))
    with pytest.raises(ValueError, match="lacks required field"):
        aenp.load(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object, got list"):
        aenp.load(tmp_path)


def test_config_fields_of_the_wrong_kind_are_named(tmp_path):
    aenp.save(aenp.build_model("tetnp_approx", 1, 1, **SMALL_TNP), tmp_path)
    for field in ("hparams", "approximate"):
        config = json.loads((tmp_path / "config.json").read_text())
        edit_config(tmp_path, **{field: [1, 2]})
        with pytest.raises(ValueError, match=f"field '{field}' must be a mapping"):
            aenp.load(tmp_path)
        (tmp_path / "config.json").write_text(json.dumps(config))
    edit_config(tmp_path, hparams={**SMALL_TNP, "num_layers": 0})
    with pytest.raises(
        ValueError, match=r"config\.json describes a model aenp cannot build: .*num_layers"
    ):
        aenp.load(tmp_path)


def test_config_that_is_a_folder_is_named(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ValueError, match=r"config\.json is a folder"):
        aenp.load(tmp_path)
