"""The whole-process benchmark (bench/whole_process.py) runs: the node loop, ``segment
--local`` (frame threads and batched) and the sequential local path as processes on PNG files, a row for each and the
three goals judged. At a tiny size on the tiny model its figures mean nothing and are only
checked to be there, never compared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "whole_process.py"
VARIANTS = ("node", "local", "local sequential", "local batched")


@pytest.mark.slow
def test_every_variant_runs_and_the_goals_are_judged(tiny_model_dir: Path, tmp_path: Path) -> None:
    figures_path = tmp_path / "whole.json"
    command = [sys.executable, str(BENCH), "--model-dir", str(tiny_model_dir), "--size", "48", "--frames", "1"]
    command += ["--rounds", "1", "--prompts", "1,4", "--json", str(figures_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]

    figures = json.loads(figures_path.read_text())
    assert set(figures["marginal_s"]) == {f"{v}|{p}" for v in VARIANTS for p in (1, 4)}
    assert all(s > 0 for runs in figures["whole_s"].values() for s in runs) and figures["matmul_fp32_gflops"] > 0
    assert all(len(runs) == 1 for runs in figures["rounds_s"].values())
    table = run.stdout.splitlines()
    for variant in VARIANTS:
        assert sum(line.startswith(f"{variant:<18}") for line in table) == 2, run.stdout
    goals = [line for line in table if line.startswith("goal: ")]
    assert len(goals) == 3 and all(line.endswith(("PASS", "MISS")) for line in goals), run.stdout


@pytest.mark.slow
def test_in_process_runs_the_same_variants_and_judges_the_goals(tiny_model_dir: Path, tmp_path: Path) -> None:
    figures_path = tmp_path / "in-process.json"
    command = [sys.executable, str(BENCH), "--model-dir", str(tiny_model_dir), "--size", "48", "--frames", "1"]
    command += ["--rounds", "2", "--prompts", "1,4", "--in-process", "--json", str(figures_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]

    figures = json.loads(figures_path.read_text())
    assert set(figures["rounds_s"]) == {f"{v}|{p}" for v in VARIANTS for p in (1, 4)}
    assert all(len(runs) == 2 and min(runs) > 0 for runs in figures["rounds_s"].values())
    goals = [line for line in run.stdout.splitlines() if line.startswith("goal: ")]
    assert len(goals) == 3 and all(line.endswith(("PASS", "MISS")) for line in goals), run.stdout
