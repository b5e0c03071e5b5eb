"""The tutorial notebook (docs/tutorial.py) runs end to end on tiny settings."""

from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import xarray as xr
from nbclient import NotebookClient

TUTORIAL = Path(__file__).parents[1] / "docs" / "tutorial.py"
TINY = {
    "OUT": "out",
    "MAX_EPOCHS": 1,
    "NUM_TASKS": 16,
    "NUM_VAL_TASKS": 16,
    "CHANNELS": 4,
    "NUM_LAYERS": 1,
}
"""One training step of a one-level U-Net: seconds instead of minutes."""
TRAIN_LON, OOD_LON = (-170, -80), (-45, 10)
"""The tutorial's training and out-of-distribution regions (degrees east)."""


def with_parameters(notebook: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
    """Inserts a cell setting ``values`` after the cell tagged "parameters" (as papermill)."""
    (index,) = [
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    ]
    missing = [name for name in values if f"\n{name} = " not in f"\n{notebook.cells[index].source}"]
    assert not missing, f"the parameters cell no longer sets {missing}"
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return notebook


@pytest.fixture(scope="module")
def prediction(tmp_path_factory) -> xr.Dataset:
    """The prediction the tutorial saves, after running it in a temporary folder."""
    folder = tmp_path_factory.mktemp("tutorial")
    notebook = with_parameters(jupytext.read(TUTORIAL), **TINY)
    NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(folder)}}).execute()
    with xr.open_dataset(folder / TINY["OUT"] / "prediction.nc") as saved:
        return saved.load()


@pytest.mark.slow
def test_prediction_covers_the_ocean_with_a_mean_and_a_positive_std(prediction):
    ocean = prediction["mean"].notnull()
    assert 0.5 < float(ocean.mean()) < 1  # land (Africa, the Americas, Indonesia) is missing
    assert prediction.sizes == {"lat": 18, "lon": 432}
    assert np.isfinite(prediction["std"].where(ocean)).sum() == ocean.sum()
    assert float(prediction["std"].min()) > 0
    # In kelvin, not in the model's normalised units: sea surface temperatures near 300 K.
    assert 280 < float(prediction["mean"].min()) <= float(prediction["mean"].max()) < 320


@pytest.mark.slow
def test_departure_from_equivariance_is_confined_to_the_training_region(prediction):
    departure = prediction["departure"]
    ocean = prediction["mean"].notnull()
    assert departure.notnull().equals(ocean)
    assert float(departure.min()) >= 0
    # The fixed inputs vanish outside the training region and a one-level U-Net sees only a
    # few cells further: the Atlantic is predicted by the strict model itself.
    assert float(departure.sel(lon=slice(*OOD_LON)).max()) == 0
    assert float(departure.sel(lon=slice(*TRAIN_LON)).max()) > 0
