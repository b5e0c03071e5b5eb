"""The Experiment protocol: every experiment answers every question, so nobody probes."""

import numpy as np
import pytest

import aenp
from aenp.data.climate import Normalisation, get_region, select_region, select_years
from aenp.data.experiments import GP1D, Climate, Smoke2D
from aenp.evaluate.terrain import departure_by_terrain
from aenp.reproduce import _terrain_rows, _value_unit
from tests.climate_fields import annual_field

YEARS = np.arange(1990, 2010)
LAT = np.arange(30.25, 46, 0.5)  # 32 rows
LON = np.arange(-119.75, -88, 0.5)  # 64 columns
TRAIN, OOD = "30,46,-120,-104", "30,46,-103,-88"


def make_climate(directory, units: str | None) -> Climate:
    """A 2-D climate experiment on a small field, in ``units`` (None: the file names none)."""
    year, lat, lon = np.meshgrid(YEARS, LAT, LON, indexing="ij")
    values = 280 + 10 * np.sin(np.radians(3 * lat)) + np.cos(np.radians(lon)) + 0.1 * year
    field = annual_field(values, YEARS, LAT, LON)
    if units is not None:
        field = field.assign_attrs(units=units)
    path = directory / "field.nc"
    field.to_netcdf(path)
    return Climate(
        data=str(path),
        train_region=TRAIN,
        ood_region=OOD,
        train_years=(1990, 2001),
        val_years=(2002, 2003),
        test_years=(2004, 2009),
        patch=8,
    )


@pytest.fixture(scope="module")
def climate(tmp_path_factory):
    return make_climate(tmp_path_factory.mktemp("kelvin"), "K")


@pytest.fixture(scope="module")
def smoke2d(smoke_store):
    return Smoke2D(smoke_store, num_targets=16)


def test_synthetic_experiments_have_no_normalisation_units_or_regions(smoke2d):
    for experiment in (GP1D(), smoke2d):
        assert experiment.normalisation is None
        assert experiment.units == ""
        assert experiment.regions is None
        # So reproduce writes no unit note and measures no departure against terrain.
        assert _value_unit(experiment) is None
        assert _terrain_rows(experiment, {"convcnp_approx": None}) == {}


def test_climate_gives_its_normalisation_units_and_regions(climate):
    train = select_years(select_region(climate.field, TRAIN), (1990, 2001))
    assert climate.normalisation == Normalisation.fit(train)
    assert climate.units == "K"
    assert climate.regions == (get_region(TRAIN), get_region(OOD))
    assert _value_unit(climate) == {"size": climate.normalisation.value_std, "units": "K"}


def test_climate_units_are_empty_when_the_file_names_none(tmp_path):
    assert make_climate(tmp_path, None).units == ""


def test_a_split_field_is_its_region_in_its_years_in_the_data_units(climate):
    test = climate.split_field("test")
    np.testing.assert_array_equal(test["time"].dt.year, np.arange(2004, 2010))
    assert test["lon"].max() <= -104 and test["lon"].min() >= -120
    ood = climate.split_field("ood")
    assert ood["lon"].min() >= -103
    np.testing.assert_array_equal(ood.values, climate.field.sel(lon=ood["lon"]).values[-6:])
    with pytest.raises(ValueError, match="unknown climate split 'later'; valid: train, val"):
        climate.split_field("later")


def test_the_terrain_analysis_refuses_an_experiment_off_the_earth():
    model = aenp.build_model("convcnp_approx", 1, 1, channels=4, num_layers=1)
    with pytest.raises(TypeError, match=r"needs an experiment on the Earth.*got gp1d"):
        departure_by_terrain(model, GP1D())
