"""The end-to-end benchmark (bench/e2e.py) runs: ``--smoke`` starts a private Redis, the
server and a worker on a tiny model, measures both ceilings, every case and the interleaved
cost rounds, and prints the table and the goals (their PASS/MISS is not checked: the figures are noisy on shared cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parent.parent / "bench" / "e2e.py"


@pytest.mark.slow
def test_the_smoke_run_measures_every_case_and_prints_the_table(tmp_path: Path):
    results = tmp_path / "e2e.json"
    run = subprocess.run(
        [sys.executable, str(E2E), "--smoke", "--model-cache", str(tmp_path / "models"), "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]
    for heading in (
        "ceiling 1: RQ no-op job",
        "ceiling 2: the in-process pipeline",
        "jobs/s  frames/s",
        "system cost, interleaved",
        "goals",
        "system cost per single-frame job",
    ):
        assert heading in run.stdout

    report = json.loads(results.read_text())
    cases = {case["case"]: case for case in report["cases"]}
    assert set(cases) == {"single-isolated", "single-load", "multi"}
    assert all(case["jobs_per_s"] > 0 and case["p50_ms"] > 0 and not case["problems"] for case in cases.values())
    stages = cases["single-isolated"]["worker_stages_ms"]
    assert list(stages) == ["decode", "preprocess", "model", "postprocess", "encode", "store"]
    assert all(ms > 0 for ms in stages.values()) and "worker stages, mean per job: decode" in run.stdout
    assert cases["multi"]["frames"] == cases["multi"]["jobs"] * 8
    assert report["rq"]["isolated"]["p50_ms"] > 0 and report["rq"]["drain_jobs_per_s"]["1"] > 0
    assert report["ceilings"]["tiny"]["single_ms"] > 0 and report["ceilings"]["tiny"]["multi_fps"] > 0
    assert [goal["passed"] in (True, False) for goal in report["goals"]] == [True]
    rounds = report["interleaved"]
    assert rounds["rounds"] == 5 and rounds["rq_p50_ms"] > 0 and rounds["in_process_p50_ms"] > 0
    assert rounds["job_p50_ms"] > 0
    assert "interleaved rounds" in report["goals"][0]["goal"]
