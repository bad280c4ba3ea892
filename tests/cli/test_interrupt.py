"""SIGTERM (``timeout``, ``kill``) ends a run like Ctrl-C: it says how to resume it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

_MAIN = "from metalab.cli.main import main; main()"


def test_a_terminated_run_names_its_folder_and_how_to_resume(tmp_path: Path) -> None:
    args = ["theory", "run", "asgd-vs-last-iterate", "--quick", "--out", str(tmp_path)]
    process = subprocess.Popen(
        [sys.executable, "-c", _MAIN, *args], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("asgd-vs-last-iterate/*/config.json")):
        assert time.monotonic() < deadline and process.poll() is None, "the run never started"
        time.sleep(0.1)
    time.sleep(1.0)  # into the stages
    process.send_signal(signal.SIGTERM)
    time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # `timeout` also signals the whole process group
    _, stderr = process.communicate(timeout=60)
    run_dir = next(tmp_path.glob("asgd-vs-last-iterate/*"))
    # 143 from the clean exit; a second signal that lands after the clean-up, while Python
    # shuts down (default handler restored), ends it by SIGTERM itself: a shell shows 143 too
    assert process.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), stderr
    resume = f"metalab theory run asgd-vs-last-iterate --resume {run_dir}"
    assert stderr.count(resume) == 1, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
