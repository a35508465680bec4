"""scripts/demo.sh as a new user runs it, less its first step (setting up .venv: this
suite already runs in one, and installing would need the network).

The script runs from a copy of the repository's layout (its examples, linked) so that its
masks and synthetic model land in a temporary folder, with a private Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.services import free_port
from tests.test_up import run_bounded

REPO = Path(__file__).resolve().parent.parent
VENV_STEP = 'source "$repo_root/scripts/venv.sh"\nensure_venv all\n'


@pytest.fixture
def demo_repo(tmp_path: Path) -> Path:
    """A folder laid out as the repository, holding demo.sh without its venv step."""
    script = (REPO / "scripts" / "demo.sh").read_text()
    assert VENV_STEP in script, "demo.sh no longer sets up .venv as this test expects"
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "demo.sh").write_text(script.replace(VENV_STEP, ""))
    (tmp_path / "examples").symlink_to(REPO / "examples")
    return tmp_path


def run_demo(repo: Path, redis_url: str, hf_home: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "MASKFARM_MODEL"}
    environment.update(
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(hf_home),
        MASKFARM_REDIS_URL=redis_url,
        MASKFARM_NAMESPACE="mfdemo",
        MASKFARM_LISTEN=f"127.0.0.1:{free_port()}",
        MASKFARM_DEVICE="cpu",
        **env,
    )
    return run_bounded(["bash", str(repo / "scripts" / "demo.sh")], environment)


def masks_of(repo: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    return {
        str(path.relative_to(repo / "masks")): np.asarray(Image.open(path))
        for path in sorted((repo / "masks").rglob("*.png"))
    }


def test_a_mistyped_model_stops_the_demo_with_its_name(demo_repo: Path, redis_url: str, tmp_path: Path) -> None:
    typo = tmp_path / "modles" / "clipseg"
    result = run_demo(demo_repo, redis_url, tmp_path / "hf", MASKFARM_MODEL=str(typo))
    assert result.returncode == 1
    assert f"no such folder: {typo}" in result.stderr and f"MASKFARM_MODEL={typo} cannot be loaded" in result.stderr
    assert "Traceback" not in result.stderr and "SYNTHETIC" not in result.stderr
    assert not (demo_repo / "masks").exists() and not (demo_repo / ".models").exists()


def test_without_weights_the_demo_says_synthetic_and_a_rerun_with_a_model_replaces_its_masks(
    demo_repo: Path, redis_url: str, tmp_path: Path
) -> None:
    first = run_demo(demo_repo, redis_url, tmp_path / "hf")
    assert first.returncode == 0, first.stderr
    assert "continuing with a SYNTHETIC model" in first.stderr and "meaningless masks" in first.stderr
    synthetic = masks_of(demo_repo)
    assert len(synthetic) == 5 * 8  # 5 example frames x (7 prompts + union)

    from maskfarm.worker.synthetic import write_synthetic_model

    other = write_synthetic_model(tmp_path / "other-model", preset="tiny", seed=1)
    second = run_demo(demo_repo, redis_url, tmp_path / "hf", MASKFARM_MODEL=str(other))
    assert second.returncode == 0, second.stderr
    assert f"masks written by {other}" in second.stderr and "SYNTHETIC model" not in second.stderr
    rerun = masks_of(demo_repo)
    assert rerun.keys() == synthetic.keys()
    assert any(not np.array_equal(rerun[name], synthetic[name]) for name in rerun), "the first run's masks were kept"
