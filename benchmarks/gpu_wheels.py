"""The wheels ``benchmarks/gpu_check.sh`` installs on a GPU machine without internet access.

    python benchmarks/gpu_wheels.py fetch [--folder .whl]   # with internet access: re-make it
    python benchmarks/gpu_wheels.py check [--folder .whl]   # exactly the listed wheels there?
    python benchmarks/gpu_wheels.py installable [--folder .whl]  # those this Python can install
    python benchmarks/gpu_wheels.py check-image             # enough for the GPU machine?
    python benchmarks/gpu_wheels.py image-site --site DIR   # DIR/sitecustomize.py: as there

The list is ``benchmarks/gpu_wheels.txt``; ``benchmarks/gpu_image.txt`` lists what the GPU
machine's image holds. ``check-image`` imports what the GPU check runs in a Python where every
module that only other distributions provide is absent, as on that machine; ``image-site``
writes the ``sitecustomize`` module that makes them absent in any Python started with its
folder on the path (``gpu_check.sh --as-image``). This script needs only the standard library
(and pip to fetch, ``packaging`` to filter), so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LIST = Path(__file__).with_name("gpu_wheels.txt")
IMAGE = Path(__file__).with_name("gpu_image.txt")
IMPORTED = ("aenp.cli", "aenp.train.run", "aenp.evaluate.run", "aenp.reproduce", "training_step")
"""What the GPU check runs: aenp's commands and the training-step benchmark (its peer, which
needs only the listed wheels, aside)."""
SOURCES = ("any", "binary", "sdist")
"""Where a wheel comes from; see the header of ``gpu_wheels.txt``."""
PYTHON_VERSION = "3.12"
"""The GPU machine's Python."""
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
"""The GPU machine's platform tags, for binary wheels."""
DOWNLOAD_OPTIONS = {
    "any": ["--implementation", "py", "--abi", "none", "--platform", "any"],
    "binary": ["--implementation", "cp"] + [a for p in PLATFORMS for a in ("--platform", p)],
}


@dataclass(frozen=True)
class Wheel:
    """A pinned requirement of the list."""

    name: str
    """The project name, normalised (PEP 503: lower case, runs of ``-_.`` as one ``-``)."""
    version: str
    source: str

    @property
    def requirement(self) -> str:
        """``name==version``, as pip takes it."""
        return f"{self.name}=={self.version}"


def normalise(name: str) -> str:
    """A project name as PEP 503 compares it (``Plum_Dispatch`` is ``plum-dispatch``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(text: str) -> list[Wheel]:
    """The wheels of a list: ``name==version source`` per line; ``#`` starts a comment.

    Raises:
        ValueError: For a line that is not a pinned requirement and a known source, or a
            project listed twice (two versions of one project stop the whole install).
    """
    wheels: dict[str, Wheel] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!]+)", words[0])
        if len(words) != 2 or match is None or words[1] not in SOURCES:
            raise ValueError(
                f"line {number} of the wheel list must be 'name==version source' with source "
                f"one of {', '.join(SOURCES)}, got {line.strip()!r}"
            )
        wheel = Wheel(normalise(match[1]), match[2], words[1])
        if wheel.name in wheels:
            raise ValueError(
                f"line {number} of the wheel list names {wheel.name} again (already "
                f"{wheels[wheel.name].requirement}); keep one version of each project"
            )
        wheels[wheel.name] = wheel
    return list(wheels.values())


def read_names(text: str) -> set[str]:
    """The normalised project names of a list of one name per line (``#`` starts a comment)."""
    return {normalise(word) for line in text.splitlines() for word in line.split("#", 1)[0].split()}


def absent_modules(available: set[str]) -> list[str]:
    """Top-level modules of this Python that no distribution in ``available`` provides."""
    return sorted(
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if not any(normalise(d) in available for d in distributions)
    )


SITECUSTOMIZE = """\"\"\"Modules absent as on the GPU machine (gpu_wheels.py image-site).\"\"\"

import importlib.util
import sys

ABSENT = frozenset({absent!r})


class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}} on the GPU machine", name=name)


_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.partition(".")[0] in ABSENT else _find_spec(name, package)
)
sys.meta_path.insert(0, Absent())
if sys.version_info < (3, 12):
    # Packages import this backport only before Python 3.12, the GPU machine's.
    import importlib.metadata

    sys.modules["importlib_metadata"] = importlib.metadata
"""
"""A ``sitecustomize`` module: every Python started with its folder on the path lacks the
modules of ``ABSENT``."""


def write_image_site(folder: Path, available: set[str]) -> Path:
    """Writes ``folder/sitecustomize.py``, with which Python lacks what ``available`` lacks.

    Absent are the modules that no distribution in ``available`` (or aenp, from this checkout)
    provides.
    """
    folder.mkdir(parents=True, exist_ok=True)
    absent = absent_modules(available | {"aenp"})
    path = folder / "sitecustomize.py"
    path.write_text(SITECUSTOMIZE.format(absent=absent))
    return path


def image_available() -> set[str]:
    """The distributions of the GPU machine: its image's and the listed wheels'."""
    return read_names(IMAGE.read_text()) | {w.name for w in read_list(LIST.read_text())}


def version_skew(wheels: list[Wheel]) -> list[str]:
    """The listed distributions this Python has at another version than their wheel's.

    :func:`image_problem` imports this Python's versions, so it stands for the GPU machine only
    where there are none: a newer release may need what the wheel does not (zarr 3.4 needs
    msgspec; 3.1.6, the wheel, does not).
    """
    skew = []
    for wheel in wheels:
        try:
            here = importlib.metadata.version(wheel.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if here != wheel.version:
            skew.append(f"{wheel.name} {here} here, {wheel.version} in the wheels")
    return skew


def image_problem(available: set[str], modules: tuple[str, ...] = IMPORTED) -> str | None:
    """What stops ``modules`` importing with only the distributions in ``available``.

    Those and aenp, from this checkout; None if nothing does.
    """
    with tempfile.TemporaryDirectory() as site:
        write_image_site(Path(site), available)
        path = [site, str(Path(__file__).parent), os.environ.get("PYTHONPATH")]
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)",
                *modules,
            ],
            capture_output=True,
            text=True,
            env=os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, path))},
        )
    if child.returncode == 0:
        return None
    return child.stderr.strip().splitlines()[-1]


def installable(filenames: list[str]) -> list[str]:
    """The wheel files this Python can install.

    All of them on the GPU machine; elsewhere (a CPU rehearsal) not the binary wheels built for
    another Python.
    """
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    supported = set(sys_tags())
    return [f for f in filenames if parse_wheel_filename(Path(f).name)[3] & supported]


def wheel_project(filename: str) -> tuple[str, str]:
    """``(normalised name, version)`` of a wheel file (``name-version-...-tags.whl``)."""
    name, version = filename.split("-")[:2]
    return normalise(name), version


def folder_problems(wheels: list[Wheel], filenames: list[str]) -> list[str]:
    """What keeps a folder of wheel files from being exactly the listed wheels (empty if none)."""
    found = [wheel_project(f) for f in filenames]
    problems = [f"missing: {w.requirement}" for w in wheels if (w.name, w.version) not in found]
    listed = {(w.name, w.version) for w in wheels}
    problems += [
        f"not listed: {f}" for f, p in zip(filenames, found, strict=True) if p not in listed
    ]
    return problems


def fetch(wheels: list[Wheel], folder: Path) -> None:
    """Empties ``folder`` of wheels and downloads (or builds) every listed one into it."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    pip = [sys.executable, "-m", "pip"]
    for source, options in DOWNLOAD_OPTIONS.items():
        requirements = [w.requirement for w in wheels if w.source == source]
        if requirements:
            subprocess.run(
                [
                    *pip,
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    *("--python-version", PYTHON_VERSION, *options),
                    *("-d", str(folder), *requirements),
                ],
                check=True,
            )
    built = [w.requirement for w in wheels if w.source == "sdist"]
    if built:
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(folder), *built], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "action", choices=("fetch", "check", "installable", "check-image", "image-site")
    )
    parser.add_argument("--folder", type=Path, default=Path(".whl"))
    parser.add_argument("--site", type=Path, help="image-site: where to write sitecustomize.py")
    args = parser.parse_args()
    wheels = read_list(LIST.read_text())
    if args.action == "image-site":
        print(write_image_site(args.site, image_available()))
        return
    if args.action == "check-image":
        if skew := version_skew(wheels):
            sys.exit(
                f"this Python cannot stand for the GPU machine ({'; '.join(skew)}); rehearse "
                "with the wheels themselves: "
                "benchmarks/gpu_check.sh --device cpu --smoke --as-image"
            )
        problem = image_problem(image_available())
        if problem:
            sys.exit(f"with only {IMAGE.name} and {LIST.name}, the GPU check fails: {problem}")
        print(f"{IMAGE.name} and {LIST.name} import {', '.join(IMPORTED)}")
        return
    if args.action == "fetch":
        fetch(wheels, args.folder)
    files = sorted(args.folder.glob("*.whl")) if args.folder.is_dir() else []
    problems = folder_problems(wheels, [f.name for f in files])
    if problems:
        sys.exit(
            f"{args.folder} does not hold the wheels of {LIST}: {'; '.join(problems)}. "
            "Re-make it with internet access: benchmarks/gpu_check.sh --fetch-wheels"
        )
    if args.action == "installable":
        chosen = installable([str(f) for f in files])
        for skipped in sorted(set(map(str, files)) - set(chosen)):
            print(f"not for this Python, skipped: {Path(skipped).name}", file=sys.stderr)
        print("\n".join(chosen))
        return
    size = sum(f.stat().st_size for f in files) / 2**20
    print(f"{args.folder}: the {len(files)} listed wheels, {size:.1f} MiB")
    if args.action == "fetch":
        for f in files:
            print(f"  {f.name}  {f.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
