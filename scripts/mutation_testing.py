"""Mutation testing of aenp's core with mutmut: how many planted bugs does the test-suite catch?

mutmut plants one small bug at a time (a flipped sign, an operator swapped, a constant changed,
an argument dropped) in the modules that ``[tool.mutmut] only_mutate`` in ``pyproject.toml``
lists, runs the tests that cover the mutated function, and records whether they fail
(*killed*) or pass (*survived*). The whole core has several thousand mutants, about two
hours on two cores, so ``--sample N`` tests a seeded random sample instead and reports the kill
rate with its 95% interval. Run from the repository root, outside CI::

    pip install -e ".[dev,mutation]"
    python scripts/mutation_testing.py --sample 400 --seed 0 --report mutation-report.md
    python scripts/mutation_testing.py --names missed.txt   # again, after adding tests

Work happens in ``mutants/`` (ignored by git); ``mutmut show NAME`` there prints a mutant's
diff, and a second run reuses mutmut's cached results for unchanged code.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths
from mutmut.mutation.trampoline import set_mutant_under_test
from mutmut.stats import status_by_exit_code

MUTANTS = Path("mutants")
CAUGHT = ("killed", "timeout", "segfault")
"""Statuses of a mutant the tests catch (a planted bug that hangs or crashes them is caught)."""
MISSED = ("survived", "no tests", "suspicious")
"""Statuses of a mutant the tests miss (no covering test counts as a miss)."""


def mutant_results() -> dict[str, str | None]:
    """Every generated mutant's name and status (``None`` until it has been run)."""
    results = {}
    for meta in sorted(MUTANTS.rglob("*.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            results[name] = None if code is None else status_by_exit_code[code]
    return results


def generate() -> list[str]:
    """Writes the mutated copy of the sources to ``mutants/``; returns the mutants' names."""
    set_mutant_under_test("mutant_generation")
    MUTANTS.mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(max_children=2)
    return sorted(mutant_results())


def module_of(name: str) -> str:
    """``aenp.nn.setconv`` for ``aenp.nn.setconv.x_lattice_grid__mutmut_3``."""
    return name.rsplit(".", 1)[0]


def report(names: list[str], seed: int | None) -> str:
    """A markdown summary: kill rate overall (with a 95% interval) and by module; survivors."""
    results = mutant_results()
    statuses = {name: results.get(name) or "not run" for name in names}
    counts = Counter(statuses.values())
    caught = sum(counts[status] for status in CAUGHT)
    judged = caught + sum(counts[status] for status in MISSED)
    rate = caught / judged if judged else math.nan
    half_width = 1.96 * math.sqrt(rate * (1 - rate) / judged) if judged else math.nan
    lines = [
        f"Mutants: {len(names)}" + (f" (random sample, seed {seed})" if seed is not None else ""),
        f"Statuses: {dict(sorted(counts.items()))}",
        f"Kill rate (killed, timed out or crashed, of those judged): {caught}/{judged} = "
        f"{100 * rate:.1f}% ± {100 * half_width:.1f}% (95%)",
        "",
        "| module | mutants | caught | missed | other |",
        "|---|---|---|---|---|",
    ]
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, status in statuses.items():
        by_module[module_of(name)][status] += 1
    for module, count in sorted(by_module.items()):
        caught_here = sum(count[status] for status in CAUGHT)
        missed_here = sum(count[status] for status in MISSED)
        other = sum(count.values()) - caught_here - missed_here
        lines.append(
            f"| {module} | {sum(count.values())} | {caught_here} | {missed_here} | {other} |"
        )
    missed = [f"{name} ({status})" for name, status in statuses.items() if status in MISSED]
    lines += ["", "Missed (`mutmut show NAME` in this folder prints each diff):", ""]
    lines += [f"* `{name}`" for name in missed]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=None, help="test N random mutants")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--max-children", type=int, default=2, help="mutants run at once")
    parser.add_argument("--report", type=Path, default=None, help="also write the summary here")
    parser.add_argument(
        "--names", type=Path, default=None, help="test the mutants named in this file, one a line"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="summarise the results of an earlier run"
    )
    args = parser.parse_args()
    names = sorted(mutant_results()) if args.report_only else generate()
    print(f"{len(names)} mutants", flush=True)
    seed = None
    if args.names is not None:
        wanted = set(args.names.read_text().split())
        names = [name for name in names if name in wanted]
        print(f"{len(names)} of the {len(wanted)} named mutants exist in this code", flush=True)
    elif args.sample is not None and args.sample < len(names):
        names, seed = sorted(random.Random(args.seed).sample(names, args.sample)), args.seed
    if not args.report_only:
        command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)]
        subprocess.run([*command, *names], check=True)
    summary = report(names, seed)
    print(summary)
    if args.report is not None:
        args.report.write_text(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
