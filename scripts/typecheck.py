"""Runs mypy on maskfarm's packages under their import names.

    .venv/bin/python scripts/typecheck.py [mypy arguments]

The packages live in folders named otherwise (``core/`` is ``maskfarm.core``: the
package-dir of pyproject.toml), and the editable install maps them with an import hook
that mypy cannot follow. So this links each package's files into build/mypy/ under the
package's import path (rebuilt every run, so new and removed files count), runs mypy
with the [tool.mypy] settings of pyproject.toml, whose mypy_path is that tree, and
prints mypy's report with the tree's paths turned back into the repository's. The exit
status is mypy's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # mypy depends on tomli below 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "mypy"


def package_dirs() -> dict[str, str]:
    """Import name -> source folder (relative to the repository root), from pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        setuptools = tomllib.load(file)["tool"]["setuptools"]
    return {name: setuptools["package-dir"].get(name, name.replace(".", "/")) for name in setuptools["packages"]}


def link_tree(packages: dict[str, str]) -> dict[str, str]:
    """Links each package's modules into TREE; returns tree prefix -> source prefix, longest first."""
    shutil.rmtree(TREE, ignore_errors=True)
    prefixes = {}
    for name, source in packages.items():
        target = TREE / name.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for module in sorted((ROOT / source).glob("*.py*")):
            if module.suffix in (".py", ".pyi"):
                (target / module.name).symlink_to(module)
        prefixes[f"{target.relative_to(ROOT)}/"] = f"{source}/"
    return dict(sorted(prefixes.items(), key=lambda item: -len(item[0])))


def to_source_path(line: str, prefixes: dict[str, str]) -> str:
    """``line`` of mypy's report with a leading tree path replaced by the source path."""
    for tree_prefix, source_prefix in prefixes.items():
        if line.startswith(tree_prefix):
            return source_prefix + line[len(tree_prefix) :]
    return line


def main(arguments: list[str]) -> int:
    prefixes = link_tree(package_dirs())
    report = subprocess.run(
        [sys.executable, "-m", "mypy", *arguments],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in report.stdout.splitlines():
        print(to_source_path(line, prefixes))
    return report.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
