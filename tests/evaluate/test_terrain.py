"""Departure from equivariance against the terrain, on a small synthetic 4-D experiment."""

import numpy as np
import pytest
import torch
import xarray as xr

import aenp
from aenp.data.experiments import Climate
from aenp.errors import InputError
from aenp.evaluate.terrain import departure_by_terrain, spearman
from aenp.nn.fixed_inputs import FixedInputs
from tests.climate_fields import annual_times

LAT, LON = np.arange(30.25, 46, 0.5), np.arange(-119.75, -88, 0.5)  # 32 x 64 cells


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Ten years of a smooth field with a mountain range (above 1500 m) in the west."""
    years = np.arange(2000, 2010)
    year, la, lo = np.meshgrid(years, LAT, LON, indexing="ij")
    values = 280 + 10 * np.sin(np.radians(3 * la)) + 0.1 * (year - 2000) + np.cos(lo)
    ridge = 2500 * np.exp(-(((LON[None, :] + 112) / 3) ** 2)) + 0 * LAT[:, None]
    data = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), values), "orog": (("lat", "lon"), 100 + ridge)},
        coords={
            "time": annual_times(years),
            "lat": LAT,
            "lon": LON,
        },
    )
    path = tmp_path_factory.mktemp("terrain") / "field.nc"
    data.to_netcdf(path)
    return Climate(
        data=str(path),
        dims=4,
        train_region="30,46,-120,-104",
        ood_region="30,46,-103,-88",
        train_years=(2000, 2005),
        val_years=(2006, 2007),
        test_years=(2008, 2009),
        patch=16,
        window=2,
    )


def model(random_fixed_inputs: bool):
    torch.manual_seed(0)
    net = aenp.build_model(
        "convcnp_approx",
        4,
        1,
        channels=4,
        num_layers=1,
        channel_inputs=1,
        domain=[[None, None], [-1, 1], [-1, 1], [None, None]],
    ).eval()
    if random_fixed_inputs:
        for module in net.modules():
            if isinstance(module, FixedInputs):
                torch.nn.init.normal_(module.projection.weight)
    return net


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 200), rng.normal(size=200)  # many ties in a
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], rel=1e-12)


def test_departure_is_zero_until_the_fixed_inputs_act(experiment):
    untouched = departure_by_terrain(model(False), experiment, every=1)
    assert untouched["mean"] == 0.0  # the projection starts at zero: strictly equivariant
    net = model(True)
    acting = departure_by_terrain(net, experiment, every=10)  # the first test year only
    # By hand: the same context cells, the ridge known from the file.
    truth = experiment.fields["test"].isel(time=[0])
    context = truth.where(np.random.default_rng(0).random(truth.shape) < 0.3)
    args = (net, context, truth, experiment.normalisation)
    mean = aenp.predict(*args, progress=False, elevation=experiment.elevation)["mean"]
    with aenp.strictly_equivariant(net):
        strict = aenp.predict(*args, progress=False, elevation=experiment.elevation)["mean"]
    departure = np.abs(mean - strict).values[0]
    metres = experiment.elevation.sel(lat=truth["lat"], lon=truth["lon"]).values
    assert acting["mean"] == pytest.approx(departure.mean(), rel=1e-9) and acting["mean"] > 0
    assert acting["high"] == pytest.approx(departure[metres > 1500].mean(), rel=1e-9)
    assert acting["low"] == pytest.approx(departure[metres < 500].mean(), rel=1e-9)
    assert acting["elevation"] == pytest.approx(spearman(departure, metres), rel=1e-9)


def test_a_strict_model_is_refused(experiment):
    strict = aenp.build_model("convcnp", 4, 1, channels=4, num_layers=1, channel_inputs=1)
    with pytest.raises(
        InputError, match=r"^the model has no fixed inputs: it cannot depart from equivariance$"
    ):
        departure_by_terrain(strict, experiment)
