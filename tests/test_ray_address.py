"""A --ray-address nothing answers on fails at once with exit code 4 and a line naming the address; Ray by itself
retries for minutes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_video

from pipelines.cli.failures import EXIT_ENVIRONMENT
from workers.ray_jobs import check_reachable

CLOSED = "127.0.0.1:1"  # tcpmux: nothing listens there on a test machine


def test_an_address_nothing_answers_on_is_refused() -> None:
    with pytest.raises(ConnectionError, match=re.escape(f"no Ray cluster answers at ray://{CLOSED}")):
        check_reachable(f"ray://{CLOSED}", timeout_s=5)
    check_reachable("auto", timeout_s=5)  # Ray's own discovery: left to Ray


def test_ingest_with_an_unreachable_cluster_exits_4(tmp_path: Path) -> None:
    make_video(tmp_path / "videos" / "a.mp4", ["red"])
    command = [str(Path(sys.executable).parent / "glscl"), "ingest", str(tmp_path / "videos")]
    command += ["--db", str(tmp_path / "db"), "--ray-address", CLOSED]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the traceback log goes, instead of the machine's /tmp
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)  # it hung for minutes before
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr[-2000:]
    assert f"no Ray cluster answers at {CLOSED}" in done.stderr.splitlines()[-1]
    [log] = tmp_path.glob("glscl-ingest-*.log")
    assert f"ConnectionError: no Ray cluster answers at {CLOSED}" in log.read_text()
