"""The documentation: the site builds with warnings as errors, and its checks catch breakage."""

import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import griffe

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "docs" / "hooks"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def load_hook(name: str):
    spec = importlib.util.spec_from_file_location(name, HOOKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The docstrings' Sphinx roles (``:func:`aenp.approximate```) became links, not text.
    pages = list((site / "api").rglob("*.html"))
    role = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj):<code>")
    assert pages and not any(role.search(page.read_text()) for page in pages)


def write_package(root: Path) -> None:
    package = root / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package."""\n')
    (package / "shapes.py").write_text(
        '"""Shapes."""\n\n\nclass Square:\n    """A square."""\n\n'
        '    def area(self) -> float:\n        """Its area."""\n        return 1.0\n'
    )
    (package / "uses.py").write_text(
        '"""Uses :class:`Square`, :meth:`~pkg.shapes.Square.area`, :func:`json.dumps` and '
        ':func:`Circle`."""\n\nfrom pkg.shapes import Square\n'
    )


def test_sphinx_roles_become_links_and_a_missing_name_is_a_warning(tmp_path, caplog):
    write_package(tmp_path)
    extensions = griffe.load_extensions(f"{HOOKS / 'sphinx_roles.py'}:SphinxRoles")
    with caplog.at_level(logging.WARNING):
        package = griffe.load("pkg", search_paths=[tmp_path], extensions=extensions)
    docstring = package["uses"].docstring.value
    # Resolved in the docstring's scope: Square is imported from pkg.shapes.
    assert '<autoref optional identifier="pkg.shapes.Square"><code>Square</code></autoref>' in (
        docstring
    )
    # A leading ~ shows the last name only.
    assert 'identifier="pkg.shapes.Square.area"><code>area</code>' in docstring
    # Another package's name stays code; a missing name is code and a warning naming it.
    assert "`json.dumps`" in docstring and "`Circle`" in docstring
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'Circle'" in warnings[0] and "uses.py" in warnings[0]


def test_links_out_of_the_docs_become_text_and_broken_ones_are_warnings(tmp_path, caplog):
    links = load_hook("repository_links")
    (tmp_path / "README.md").write_text("# Title\n\n## Using the library\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    page = SimpleNamespace(file=SimpleNamespace(src_path="index.md"))
    config = {"docs_dir": str(docs)}

    def convert(markdown: str) -> str:
        return links.on_page_markdown(markdown, page=page, config=config)

    with caplog.at_level(logging.WARNING):
        assert convert("[use](../README.md#using-the-library)") == "use"
        assert convert("[page](other.md) [web](https://example.org)") == (
            "[page](other.md) [web](https://example.org)"
        )
        assert caplog.records == []
        assert convert("[gone](../README.md#training) [lost](../src/missing.py)") == "gone lost"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "#training" in warnings[0] and "missing.py" in warnings[1]


def test_code_cites_sections_of_the_architecture_page():
    headings = {
        match.lower()
        for match in re.findall(r"^#+ (.+)$", ARCHITECTURE.read_text(), flags=re.MULTILINE)
    }
    stale, unknown = [], []
    for folder in ("src", "tests", "benchmarks", "scripts"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".yaml") or path == Path(__file__).resolve():
                continue
            text = path.read_text(encoding="utf-8")
            where = path.relative_to(ROOT)
            stale += [f"{where}: {m}" for m in re.findall(r"DESIGN §[\w .]+", text)]
            # A citation may wrap onto the next (comment) line: "(docs/architecture.md, Run
            # directories)".
            cited = re.findall(r"docs/architecture\.md, ([\w\s#-]+?)[).;:,]", text)
            unknown += [
                f"{where}: {section}"
                for section in (" ".join(c.replace("#", " ").split()) for c in cited)
                if section.lower() not in headings
            ]
    assert stale == [], "cite docs/architecture.md, <section> instead"
    assert unknown == [], "no such section of docs/architecture.md"
