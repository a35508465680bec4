"""The house is one-way: each package imports only the packages below it (docs/ARCHITECTURE.md).

Every import statement of every module is read from the source (top-level and inside
functions alike: a lazy import is still a dependency), so a new arrow that points up or
sideways fails here, before it spreads.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PACKAGES = {
    "maskfarm.core": REPO / "core",
    "maskfarm.v1": REPO / "protos" / "maskfarm" / "v1",
    "maskfarm.jobqueue": REPO / "jobqueue",
    "maskfarm.server": REPO / "server",
    "maskfarm.worker": REPO / "worker",
    "maskfarm.client": REPO / "client",
    "maskfarm": REPO / "command",
}

MAY_IMPORT = {
    "maskfarm.core": {"maskfarm.core"},
    "maskfarm.v1": {"maskfarm.v1", "maskfarm.core"},
    "maskfarm.jobqueue": {"maskfarm.jobqueue", "maskfarm.core"},
    "maskfarm.server": {"maskfarm.server", "maskfarm.jobqueue", "maskfarm.v1", "maskfarm.core"},
    "maskfarm.worker": {"maskfarm.worker", "maskfarm.jobqueue", "maskfarm.core"},
    # `segment --local` runs the worker's pipeline in the client's process: through the worker's
    # command-line module only (add_model_options, run_local_segment), never its internals.
    "maskfarm.client": {"maskfarm.client", "maskfarm.v1", "maskfarm.core", "maskfarm.worker.cli"},
    "maskfarm": set(PACKAGES),
}

# Third-party packages each layer may not import, whatever it imports of maskfarm.
FORBIDDEN = {
    "maskfarm.core": {"grpc", "grpc_health", "grpc_reflection", "google", "redis", "rq", "torch", "torchvision",
                      "transformers", "cv2", "prometheus_client", "huggingface_hub"},
    "maskfarm.jobqueue": {"grpc", "torch", "torchvision", "transformers", "cv2"},
    "maskfarm.server": {"torch", "torchvision", "transformers", "cv2", "huggingface_hub"},
    "maskfarm.client": {"redis", "rq", "torch", "torchvision", "transformers", "cv2", "prometheus_client"},
}  # fmt: skip

GENERATED = ("segmentation_pb2",)


def modules(package: str) -> list[tuple[str, Path]]:
    folder = PACKAGES[package]
    found = []
    for path in sorted(folder.glob("*.py")):
        if path.stem.startswith(GENERATED):
            continue
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        found.append((name, path))
    return found


def imported_names(module: str, path: Path) -> list[tuple[int, str]]:
    """Every module named by an import in ``path``: absolute, with relative imports resolved."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.rsplit(".", node.level - (path.stem == "__init__"))[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.append((node.lineno, target))
            # `from maskfarm.server import store` names the module maskfarm.server.store
            names += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if target in PACKAGES]
    return names


def owner(name: str) -> str | None:
    """The maskfarm package that ``name`` belongs to (the longest match), or None."""
    matches = [package for package in PACKAGES if name == package or name.startswith(package + ".")]
    return max(matches, key=len, default=None)


def allowed(package: str, name: str) -> bool:
    return any(name == rule or name.startswith(rule + ".") for rule in MAY_IMPORT[package])


def test_every_package_has_modules() -> None:
    """The rule below must see the code it is about: an empty package means a path moved."""
    for package in PACKAGES:
        assert modules(package), f"{package}: no modules found under {PACKAGES[package]}"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_point_down(package: str) -> None:
    wrong = []
    for module, path in modules(package):
        for line, name in imported_names(module, path):
            target = owner(name)
            if target is not None and target != package and not allowed(package, name):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not wrong, f"{package} may import only {sorted(MAY_IMPORT[package])}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_third_party_boundaries(package: str) -> None:
    wrong = []
    for module, path in modules(package):
        for line, name in imported_names(module, path):
            if name.split(".")[0] in FORBIDDEN[package]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not wrong, f"{package} must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(wrong)


def test_only_the_adapter_knows_rq() -> None:
    """RQ's classes, exceptions and keys are reached through maskfarm.jobqueue.rq_adapter only,
    so an RQ release that changes them is met in one file."""
    wrong = []
    for package in PACKAGES:
        for module, path in modules(package):
            if module == "maskfarm.jobqueue.rq_adapter":
                continue
            wrong += [
                f"{path.relative_to(REPO)}:{line} imports {name}"
                for line, name in imported_names(module, path)
                if name.split(".")[0] == "rq"
            ]
    assert not wrong, "\n".join(wrong)


def test_core_needs_only_numpy_and_pillow() -> None:
    """maskfarm.core is what every install has: the standard library, numpy, Pillow (and OpenEXR,
    imported where an EXR file is read or written, an optional extra)."""
    third_party = {"numpy", "PIL", "OpenEXR"}
    wrong = []
    for module, path in modules("maskfarm.core"):
        for line, name in imported_names(module, path):
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in third_party and top != "maskfarm":
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_rule_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import of the server from core is found."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from maskfarm.server.app import serve\n")
    names = [name for _, name in imported_names("maskfarm.core.probe", module)]
    assert names == ["maskfarm.server.app"]
    assert not allowed("maskfarm.core", names[0])
    relative = tmp_path / "relative.py"
    relative.write_text("from ..server import store\n")
    assert "maskfarm.server.store" in [name for _, name in imported_names("maskfarm.core.relative", relative)]
