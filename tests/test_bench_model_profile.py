"""The model-interior profile (bench/model_profile.py) runs: at a tiny size on the tiny
model, it prints and writes a time for every row, each row's GFLOP, and the roofline.
Times are only checked to be there (positive), never compared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROFILE = Path(__file__).resolve().parent.parent / "bench" / "model_profile.py"
MATMUL_ROWS = {"vision: q/k/v/out projections", "vision: attention core (SDPA)", "vision: MLP fc1 + fc2", "decoder"}


@pytest.mark.slow
def test_every_row_is_timed_and_the_roofline_printed(tiny_model_dir: Path, tmp_path: Path) -> None:
    figures_path = tmp_path / "profile.json"
    command = [sys.executable, str(PROFILE), "--size", "64x48", "--frames", "1", "--prompts", "2"]
    command += ["--model-dir", str(tiny_model_dir), "--write-dir", str(tmp_path), "--json", str(figures_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]

    figures = json.loads(figures_path.read_text())
    rows = figures["ms"]
    assert len(rows) == 14 and all(ms >= 0 for ms in rows.values()), rows
    assert all(rows[name] > 0 for name in MATMUL_ROWS), rows
    assert {name for name, flop in figures["gflop"].items() if flop > 0} == MATMUL_ROWS | {
        "vision: patch + position embedding"
    }
    assert figures["prompts"] == 2 and figures["matmul_fp32_gflops"] > 0
    table = run.stdout.splitlines()
    assert all(sum(line.startswith(f"{name} ") for line in table) == 1 for name in rows), run.stdout
    assert any(line.startswith("fp32 matmul peak") and "roofline" in line for line in table), run.stdout
