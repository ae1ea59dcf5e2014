"""`aisentinel demo`: the daemon on a live scenario finds every attacker, bans no one benign."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from aisentinel.demo.runner import run_demo


@pytest.mark.slow
def test_demo_detects_all_attackers_and_spares_benign(tmp_path: Path) -> None:
    """A short demo run ends by itself with every attacker detected and no benign address
    banned; its GPU part shows the miner, the GPU-time thief and aisentinel_gpu_* series."""
    out = io.StringIO()
    status = run_demo(duration=12.0, seed=3, workdir=tmp_path, rate=60.0, out=out)
    text = out.getvalue()
    assert status == 0, text
    detected = re.search(r"attackers detected: (\d+) of (\d+)", text)
    assert detected is not None, text
    assert detected.group(1) == detected.group(2), text
    assert "benign addresses banned: 0" in text
    assert "allowlisted (192.0.2.192/26)" in text
    assert "log rotation(s) followed" in text
    assert " 0 log rotation(s)" not in text  # the scenario rotates every log half-way
    assert "would BAN" in text
    assert "/metrics" in text
    # The GPU story: a miner on GPU 1 and GPU-time theft by an unauthenticated client.
    assert "cryptocurrency miner on GPU 1" in text
    assert "(miner name xmrig)" in text
    assert re.search(r"gpu_theft +ban +2001:db8:0:5a::", text), text
    assert "aisentinel_gpu_utilization_ratio{" in text
    assert 'workload="pid:' in text
