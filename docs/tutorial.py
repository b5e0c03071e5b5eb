# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: your own gridded field, an approximately equivariant ConvCNP, and where it departs
#
# A neural process reads a few observations (the *context*) and predicts a field everywhere,
# with an uncertainty. A translation-equivariant model (ConvCNP) treats every place alike; an
# *approximately* equivariant one adds a few learned **fixed inputs**, functions of absolute
# position, so that it can learn what is special about a place — and with them zeroed it is the
# strictly equivariant model again.
#
# In this tutorial you
#
# 1. open a real gridded field from a netCDF file,
# 2. train a small approximately equivariant ConvCNP on it with `aenp train`,
# 3. predict a map with uncertainty from a few observed cells with `aenp.predict`,
# 4. compare it with the strict model (`aenp.strictly_equivariant`), and
# 5. map where the model departs from equivariance, `|μ − μ_strict|`.
#
# It needs `pip install "aenp[climate]" jupytext` and Jupyter. Make it a notebook with
# `jupytext --to notebook docs/tutorial.py` and open `docs/tutorial.ipynb`, or run it in one go
# with `jupytext --to notebook --execute docs/tutorial.py` (which also needs `nbconvert`).
# Training takes a few minutes on a laptop CPU.

# %%
import subprocess
import sys
import warnings
from pathlib import Path

import iris_sample_data
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import aenp
from aenp.data.climate import open_field
from aenp.prediction import ExtrapolationWarning, load_predictor

# %% [markdown]
# ## Settings
#
# Raise `MAX_EPOCHS` and `NUM_TASKS` for a better model, lower them for a quicker look. (The
# test-suite runs this notebook with tiny values set right after this cell.)

# %% tags=["parameters"]
OUT = "tutorial-output"  # folder for the trained run and the prediction
MAX_EPOCHS = 8  # passes over the training tasks
NUM_TASKS = 4096  # training tasks per epoch, 16 per step
NUM_VAL_TASKS = 64  # validation tasks, checked after every epoch
CHANNELS = 16  # width of the ConvCNP's U-Net
NUM_LAYERS = 3  # depth of the U-Net; its receptive field grows with it

# %% [markdown]
# ## 1. The data: monthly sea-surface temperature along the equator
#
# Any CF-style netCDF or zarr file works (ERA5, WFDE5, WeatherBench2, CMIP…). Here we use a real
# file that the `iris-sample-data` package ships: `ostia_monthly.nc`, monthly means of the Met
# Office's **OSTIA** sea-surface temperature analysis (satellite and in-situ observations
# blended on a grid), April 2006 to September 2010, on a band from 5°S to 5°N around the globe
# (18 × 432 cells of 0.56° × 0.83°). Land is missing (NaN); aenp never feeds missing cells to a
# model.
#
# `open_field` returns the file's field as a `[time, lat, lon]` DataArray, latitudes south to
# north and longitudes in [−180, 180).

# %%
DATA = Path(iris_sample_data.path) / "ostia_monthly.nc"
field = open_field(DATA)
print(field)

# %% [markdown]
# One month of it, January 2010, the peak of a moderate El Niño. The cold tongue of the eastern
# Pacific (dark, 140°W–80°W) and the warm pool of the western Pacific (bright, at both ends)
# are tied to *where* they are: structure that a strictly translation-equivariant model cannot
# know and fixed inputs can learn.


# %%
def plot_band(maps, titles, **style):
    """Maps of the band, one above the other, longitude along the x-axis."""
    fig, axes = plt.subplots(len(maps), 1, figsize=(12, 1.9 * len(maps)), sharex=True)
    for ax, data, title in zip(np.atleast_1d(axes), maps, titles, strict=True):
        data.plot(ax=ax, x="lon", **style)
        ax.set_title(title)
    fig.tight_layout()
    return fig


month = field.sel(time="2010-01").isel(time=0)
fig = plot_band([month], ["OSTIA sea-surface temperature, January 2010 (K)"], cmap="inferno")

# %% [markdown]
# ## 2. Train an approximately equivariant ConvCNP
#
# `aenp train` trains one model of the climate experiment on your file. We train in the central
# and eastern Pacific (170°W–80°W) in 2006–2008, validate there in 2009, and keep 2010 for
# testing there and, out of distribution, in the Atlantic (45°W–10°E); regions are
# `"south,north,west,east"` boxes. A task is one month of a 16 × 16 patch of cells (the band is
# only 18 cells tall), with a random 5–50% of its ocean cells as context and the rest as
# targets. `convcnp_approx` is a ConvCNP with 4 fixed inputs, dropped for half of the training
# tasks so that the model stays close to equivariant.
#
# In a shell this is `aenp train experiment=climate model=convcnp_approx …` with the arguments
# below; here it runs with the notebook's own Python, so the `aenp` of this environment is used.

# %%
TRAIN_REGION, OOD_REGION = "-5,5,-170,-80", "-5,5,-45,10"
RUN = Path(OUT) / "run"

train = [
    *(sys.executable, "-m", "aenp.cli", "train"),
    "experiment=climate",
    "model=convcnp_approx",
    f"experiment.options.data={DATA}",
    f'experiment.options.train_region="{TRAIN_REGION}"',
    f'experiment.options.ood_region="{OOD_REGION}"',
    "experiment.options.train_years=[2006,2008]",
    "experiment.options.val_years=[2009,2009]",
    "experiment.options.test_years=[2010,2010]",
    "experiment.options.patch=16",
    f"model.hparams.channels={CHANNELS}",
    f"model.hparams.num_layers={NUM_LAYERS}",
    f"data.num_train_tasks={NUM_TASKS}",
    f"data.num_val_tasks={NUM_VAL_TASKS}",
    f"trainer.max_epochs={MAX_EPOCHS}",
    "trainer.enable_progress_bar=false",
    "optimizer.lr=2e-3",
    f"run_dir={RUN}",
]
result = subprocess.run(train, capture_output=True, text=True)
if result.returncode:
    raise RuntimeError(f"aenp train failed:\n{result.stderr[-5000:]}")
print(result.stdout.splitlines()[-1])  # where the run is

# %% [markdown]
# The run directory holds the config, checkpoints, logs (`RUN/logs`) and the best model
# (`RUN/model`) with the normalisation fitted to the training data. Running the same command
# again resumes the run rather than starting over.
#
# ## 3. Predict a map with uncertainty
#
# Suppose that in January 2010 only one cell in ten was observed. `aenp.predict` takes the
# observations as a gridded DataArray (NaN = unobserved) and a grid to predict on — here the
# whole band — and returns the predictive mean and standard deviation in kelvin.
# `load_predictor` gives the trained model and its normalisation, so that the same model can
# also be run strictly equivariant.
#
# The Atlantic and Indian Ocean lie far outside the training region, and aenp warns about it
# (`ExtrapolationWarning`); here that is the point, so we silence the warning.

# %%
model, normalisation = load_predictor(RUN)
observed = np.random.default_rng(seed=0).random(month.shape) < 0.1
context = month.where(observed)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ExtrapolationWarning)
    prediction = aenp.predict(model, context, month, normalisation, progress=False)
    with aenp.strictly_equivariant(model):
        strict = aenp.predict(model, context, month, normalisation, progress=False)

ocean = month.notnull()
prediction, strict = prediction.where(ocean), strict.where(ocean)

# %% [markdown]
# The model predicts the whole band as one strip of cells that starts and ends at 55°E,
# opposite the training region, where its periodic longitude turns over: hence the seam there.

# %%
fig = plot_band(
    [context, prediction["mean"], prediction["std"]],
    ["context: one cell in ten (K)", "predictive mean μ (K)", "predictive std σ (K)"],
    cmap="inferno",
)

# %% [markdown]
# ## 4. Compare with the strict model
#
# The strict model is the same network with its fixed inputs zeroed. On the cells hidden from
# both, how far is each mean from the truth? In the training region the fixed inputs can help
# (whether they do depends on the data and on training; with these small settings the two stay
# close); in the Atlantic, where the fixed inputs are zero, the two models are one.

# %%
hidden = ocean & ~observed
regions = {"Pacific (training region)": (-170, -80), "Atlantic (out of distribution)": (-45, 10)}


def mean_abs_error(result):
    """Mean |μ − truth| (K) over the hidden cells of each region."""
    error = abs(result["mean"] - month).where(hidden)
    return {name: float(error.sel(lon=slice(*lon)).mean()) for name, lon in regions.items()}


print(pd.DataFrame({"approximate": mean_abs_error(prediction), "strict": mean_abs_error(strict)}))

# %% [markdown]
# ## 5. Where the model departs from equivariance
#
# `|μ − μ_strict|` is zero wherever the fixed inputs do not reach: they vanish outside the
# training region (dashed), and the ConvCNP spreads their effect only as far as its U-Net sees.
# So the map is zero in the Atlantic and the Indian Ocean, and shows where in the Pacific the
# model has learned something tied to absolute position: with the default settings, mostly
# along the coast of Ecuador and Peru, where the land edge breaks translation symmetry.

# %%
prediction["departure"] = abs(prediction["mean"] - strict["mean"])
fig = plot_band(
    [prediction["departure"]], ["departure from equivariance |μ − μ_strict| (K)"], cmap="viridis"
)
for west, east in regions.values():
    fig.axes[0].axvspan(west, east, fill=False, edgecolor="white", linestyle="--")

# %% [markdown]
# ## 6. Save the prediction
#
# The prediction is an xarray Dataset (`mean`, `std` and now `departure`); write it as netCDF for
# your own tools. From the shell, `aenp predict RUN --context observations.nc --targets grid.nc
# --out prediction.nc` does steps 3 and 6 in one go (the observations may also be a CSV table of
# stations with `lat`, `lon` and a value column).

# %%
prediction.to_netcdf(Path(OUT) / "prediction.nc")

# %% [markdown]
# ## Next steps
#
# * Your own file: change `DATA`, the regions and the years (`experiment.options.variable=…`
#   picks the variable when the file holds several).
# * Time as an input too: `experiment=climate3d`; elevation as well: `experiment=climate4d`.
# * Other backbones: `model=tepttnp_approx`, `model=relaxed_convcnp`, `model=equivcnp_approx`.
# * The run's log-likelihoods on its test and out-of-distribution tasks: `aenp evaluate RUN`.
