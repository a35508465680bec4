"""The GPU-feed benchmark (bench/gpu_feed.py) runs: the real job path around the stand-in
model at a tiny size, a row for every input and output format at every thread count, and a
cores-per-GPU line for each. Figures are only checked to be there, never compared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu_feed.py"
PAIRS = {("png8", "png8"), ("jpeg", "png8"), ("exr", "png8"), ("png8", "png16"), ("png8", "exr"), ("png8", "float32")}


@pytest.mark.slow
def test_every_format_is_fed_at_every_thread_count(tmp_path: Path) -> None:
    pytest.importorskip("OpenEXR")
    figures_path = tmp_path / "feed.json"
    command = [sys.executable, str(BENCH), "--size", "64x48", "--frames", "4", "--threads", "1,2"]
    run = subprocess.run([*command, "--json", str(figures_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]

    cases = json.loads(figures_path.read_text())["cases"]
    assert {(c["input"], c["output"], c["threads"]) for c in cases} == {(i, o, t) for i, o in PAIRS for t in (1, 2)}
    assert len(cases) == 12
    for case in cases:
        assert case["frames_per_s"] > 0 and case["cpu_ms_per_frame"] > 0 and case["cores_per_gpu"] > 0, case
    table = run.stdout.splitlines()
    for source, target in PAIRS:
        rows = [line for line in table if line.startswith(f"{source} -> {target} ")]
        assert len(rows) == 2, run.stdout
        assert sum(line.startswith(f"  {source} -> {target}: ") and " cores" in line for line in table) == 1
    assert any(line.startswith("cores per GPU at 500 frames/s") for line in table), run.stdout
