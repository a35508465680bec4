"""The versions an image is built from are the versions tested, and they fit together.

constraints.txt pins maskfarm's dependency tree as the test venv holds it (scripts/lock.py);
the images install with it. The worker image takes torch from its PyTorch base image, so
the base named in docker/worker.Dockerfile must satisfy what the pinned transformers asks of
torch: transformers 5 disables itself below torch 2.6, and a worker built on an older base
could not load any model.
"""

from __future__ import annotations

import re
from importlib.metadata import distribution, version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
WORKER_DOCKERFILE = ROOT / "docker/worker.Dockerfile"


def pinned() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned_version = line.partition("==")
            assert pinned_version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(pinned_version)
    return pins


def base_image_torch() -> Version:
    """The torch release of the worker's ``pytorch/pytorch:X.Y.Z-cuda...`` base image."""
    base = re.search(r"^FROM\s+(\S+)", WORKER_DOCKERFILE.read_text(), re.M)[1]
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-runtime", base)
    assert match, f"worker base {base!r} is not a pytorch/pytorch runtime image; update this test's reading of it"
    return Version(match[1])


def torch_required_by(package: str) -> list[Requirement]:
    """The torch requirements the installed ``package`` declares for its ``torch`` extra."""
    requirements = [Requirement(text) for text in distribution(package).requires or []]
    return [r for r in requirements if r.name == "torch" and r.marker and r.marker.evaluate({"extra": "torch"})]


def project_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts += [t for t in extra if not t.startswith("maskfarm")]
    return {canonicalize_name(Requirement(t).name): Requirement(t) for t in texts}


def test_the_worker_base_torch_satisfies_the_pinned_transformers():
    transformers = pinned()["transformers"]
    assert Version(version("transformers")) == transformers, (
        "the test venv does not hold the pinned transformers: install with -c constraints.txt"
    )
    wanted = torch_required_by("transformers")
    assert wanted, "transformers no longer declares its torch requirement: read its release notes and update this test"
    torch = base_image_torch()
    for requirement in wanted:
        assert torch in requirement.specifier, (
            f"{WORKER_DOCKERFILE.name} is based on torch {torch}, but transformers {transformers} needs "
            f"{requirement}: pick a newer pytorch/pytorch base"
        )


def test_the_worker_base_torch_is_within_the_project_range():
    requirements = project_requirements()
    assert base_image_torch() in requirements["torch"].specifier


def test_the_test_venv_holds_the_pinned_versions():
    wrong = {name: (str(pin), version(name)) for name, pin in pinned().items() if Version(version(name)) != pin}
    assert not wrong, f"installed versions differ from constraints.txt (name: (pinned, installed)): {wrong}"


def test_pins_lie_within_the_ranges_pyproject_declares():
    pins = pinned()
    outside = {
        name: f"{pins[name]} not in {req.specifier}"
        for name, req in project_requirements().items()
        if name in pins and pins[name] not in req.specifier
    }
    assert not outside, outside


@pytest.mark.parametrize("name", ["transformers", "rq", "redis", "protobuf", "grpcio", "torch", "numpy", "pillow"])
def test_majors_that_break_have_an_upper_bound(name):
    specifier = project_requirements()[name].specifier
    assert any(spec.operator == "<" for spec in specifier), f"{name}: no upper bound in pyproject.toml"
