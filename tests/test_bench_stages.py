"""The per-stage benchmark (bench/stages.py) runs: at tiny sizes, one repetition, it
prints and writes a figure for every stage at every size, the model's time and the matmul
peak. Times are only checked to be there (positive), never compared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = Path(__file__).resolve().parent.parent / "bench" / "stages.py"
SIZES = ["64x48", "96x64"]
ROWS = {
    *(f"decode {name}" for name in ("png8", "png16", "jpeg q90", "tiff16 (OpenCV default)")),
    *(f"decode exr half {compression}" for compression in ("zip", "piz", "dwaa")),
    "preprocess to 352x352",
    "post: threshold+smooth 9 at 352",
    "post: resize+clamp to frame",
    "post: whole, defaults",
    "post: whole, blur 8",
    "post: whole, union+invert",
    *(f"encode {name}" for name in ("png8", "png16", "tiff16", "exr", "float32", "npy (--local)")),
    "write png8 file",
    "store png8 in Redis",
    "store float32 in Redis",
}


@pytest.mark.slow
def test_every_stage_is_timed_at_every_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("OpenEXR")
    figures_path = tmp_path / "stages.json"
    command = [sys.executable, str(STAGES), "--sizes", ",".join(SIZES), "--repeats", "1"]
    command += ["--model-dir", str(tiny_model_dir), "--model-size", SIZES[0], "--json", str(figures_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]

    figures = json.loads(figures_path.read_text())
    assert figures["sizes"] == SIZES
    assert set(figures["stages_ms"]) == ROWS
    for stage, cells in figures["stages_ms"].items():
        assert set(cells) == set(SIZES), stage
        assert all(ms > 0 for ms in cells.values()), (stage, cells)
    assert figures["model_ms"]["ms"] > 0 and figures["matmul_fp32_gflops"] > 0

    table = run.stdout.splitlines()
    assert all(sum(line.startswith(f"{stage} ") for line in table) == 1 for stage in ROWS), run.stdout
    assert any(line.startswith("model (") and "ms per frame" in line for line in table)
    assert any(line.startswith("fp32 matmul peak:") for line in table)
