"""The curated public API: what ``maskfarm.client`` and ``maskfarm.worker`` promise by name."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import maskfarm
import maskfarm.client
import maskfarm.worker


def test_version_is_the_installed_distributions() -> None:
    assert maskfarm.__version__ == importlib.metadata.version("maskfarm")
    assert maskfarm.__version__[0].isdigit()


@pytest.mark.parametrize("package", [maskfarm.client, maskfarm.worker])
def test_every_public_name_resolves(package) -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None, name


def test_the_client_api_is_the_implementations() -> None:
    """The names are the implementation's own objects, not copies: isinstance and except work."""
    from maskfarm.client.client import Client
    from maskfarm.client.errors import JobFailed, MaskfarmError
    from maskfarm.core.params import MaskParams

    assert maskfarm.client.Client is Client
    assert maskfarm.client.MaskParams is MaskParams
    assert issubclass(maskfarm.client.JobFailed, MaskfarmError) and maskfarm.client.JobFailed is JobFailed


def test_worker_names_are_lazy_and_unknown_names_fail() -> None:
    """``import maskfarm.worker`` must not import torch (the CLI imports maskfarm.worker.cli)."""
    code = "import sys, maskfarm.worker, maskfarm.worker.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    with pytest.raises(AttributeError, match="no attribute 'Segmentr'"):
        maskfarm.worker.Segmentr  # noqa: B018
