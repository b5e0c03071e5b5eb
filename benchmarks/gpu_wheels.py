"""The wheels ``benchmarks/gpu_check.sh`` installs on a GPU machine without internet access.

    python benchmarks/gpu_wheels.py fetch [--folder .whl]   # with internet access: re-make it
    python benchmarks/gpu_wheels.py check [--folder .whl]   # exactly the listed wheels there?

The list is ``benchmarks/gpu_wheels.txt``. This script needs only the standard library (and pip
to fetch), so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LIST = Path(__file__).with_name("gpu_wheels.txt")
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
    parser.add_argument("action", choices=("fetch", "check"))
    parser.add_argument("--folder", type=Path, default=Path(".whl"))
    args = parser.parse_args()
    wheels = read_list(LIST.read_text())
    if args.action == "fetch":
        fetch(wheels, args.folder)
    files = sorted(args.folder.glob("*.whl")) if args.folder.is_dir() else []
    problems = folder_problems(wheels, [f.name for f in files])
    if problems:
        sys.exit(
            f"{args.folder} does not hold the wheels of {LIST}: {'; '.join(problems)}. "
            "Re-make it with internet access: benchmarks/gpu_check.sh --fetch-wheels"
        )
    size = sum(f.stat().st_size for f in files) / 2**20
    print(f"{args.folder}: the {len(files)} listed wheels, {size:.1f} MiB")
    if args.action == "fetch":
        for f in files:
            print(f"  {f.name}  {f.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
