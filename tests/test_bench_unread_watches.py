"""The unread-watches benchmark (bench/unread_watches.py) runs: a private Redis and server
with tokens, unread streams refused beyond the caps, the server's memory and another
caller's latency printed (the figures themselves are not checked: shared cores)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "unread_watches.py"


@pytest.mark.slow
def test_unread_watches_are_refused_beyond_the_cap_and_the_memory_printed() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH), "--watches", "60", "--channels", "3", "--mask-mib", "0.25", "--probes", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-5000:]
    held = re.search(
        r"with them open: server RSS \d+ MiB \([+-]\d+\); (\d+) refused \(RESOURCE_EXHAUSTED\), "
        r"(\d+) held; alice GetJob [\d.]+ ms, first WatchJob event [\d.]+ ms",
        run.stdout,
    )
    assert held and int(held[1]) + int(held[2]) == 60 and int(held[2]) <= 32, run.stdout
    assert re.search(r"after cancelling them: server RSS \d+ MiB", run.stdout)
    assert re.search(r"goal \(\+500 MiB at most, alice served within 1 s\): (PASS|MISS)", run.stdout)
