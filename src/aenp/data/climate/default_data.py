"""The offline default data: HadCM3 annual-mean 1.5 m air temperature over North America.

``iris-sample-data`` ships it (:data:`DEFAULT_DATASET`): 240 years (1860-2099) of a 360-day
calendar on a 37 x 49 grid of 1.25° (lat) x 1.875° (lon) cells, 15-60°N, 135-45°W, one file
per emission scenario.
"""

from __future__ import annotations

from pathlib import Path

from aenp.errors import InputError

DEFAULT_DATASET = {
    "name": "HadCM3 annual-mean 1.5 m air temperature over North America",
    "package": "iris-sample-data",
    "variable": "air_temperature",
    "units": "K",
    "years": (1860, 2099),
    "calendar": "360_day",
    "files": {"E1": "E1_north_america.nc", "A1B": "A1B_north_america.nc"},
}
"""The offline default data: one file per emission scenario."""


def default_data_path(scenario: str = "E1") -> Path:
    """Path of the default data file of an emission scenario (``"E1"`` or ``"A1B"``).

    Raises:
        ValueError: If the scenario is unknown.
        ImportError: If ``iris-sample-data`` is not installed.
    """
    files = DEFAULT_DATASET["files"]
    if scenario not in files:
        raise InputError(f"scenario must be one of {', '.join(files)}, got {scenario!r}")
    try:
        import iris_sample_data
    except ImportError as error:
        raise ImportError(
            'the default climate data needs iris-sample-data: pip install "aenp[climate]"'
        ) from error
    return Path(iris_sample_data.path) / files[scenario]
