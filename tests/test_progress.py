"""Progress output (issue 13, item 11): a live bar on a terminal, plain lines in a redirected log.

The commands run as subprocesses with stderr redirected to a real file, as a user's log would be;
the file must hold whole lines, no carriage-return redraws.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ganport.progress import is_terminal, progress_bar

TINY_TRAIN = ["--dataset", "digits", "--image-size", "16", "--n-samples", "64", "--latent-dim", "8",
              "--batch-size", "8", "--sample-interval", "100", "--seed", "0", "--device", "cpu"]


def _run_logged(args: list[str], log: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    with log.open("w") as handle:
        done = subprocess.run([sys.executable, "-m", "ganport", *args], stdout=subprocess.PIPE, stderr=handle,
                              text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, log.read_text()
    return done


def test_plain_lines_when_not_a_terminal_and_a_live_bar_on_one():
    out = io.StringIO()
    assert not is_terminal(out)
    with progress_bar(10, desc="epoch 1/1", file=out, every=4) as bar:
        for step in range(10):
            bar.update(1, loss=f"{step / 10:.1f}")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # every 4 updates, and the end
    assert [re.search(r"step (\d+)/10", line).group(1) for line in lines] == ["4", "8", "10"]
    assert lines[0].startswith("epoch 1/1: step 4/10 (40%)") and lines[0].endswith("loss=0.3")
    live = io.StringIO()
    with progress_bar(10, file=live, live=True) as bar:
        for _ in range(10):
            bar.update(1, loss="0.5")
    assert "\r" in live.getvalue()  # the terminal form redraws in place: what a log must not get
    quiet = io.StringIO()
    with progress_bar(10, file=quiet, enabled=False) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A 12-step cgan run with stderr in a file: (log, checkpoints folder)."""
    root = tmp_path_factory.mktemp("progress")
    log = root / "train.log"
    _run_logged(["train", "cgan", *TINY_TRAIN, "--steps", "12", "--log-every", "4", "--out-dir", str(root / "runs"),
                 "--run-name", "r"], log)
    return log, root / "runs" / "r" / "checkpoints"


def test_train_log_has_one_line_per_log_interval(trained, tmp_path):
    log, checkpoints = trained
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    steps = [int(m) for m in re.findall(r"step (\d+)/12 ", text)]
    assert steps == [4, 8, 12], text
    # resumed: the count starts at the checkpoint's step
    resumed = tmp_path / "resumed.log"
    _run_logged(["train", "--resume", str(checkpoints / "step_000012.pt"), "--steps", "16"], resumed)
    text = resumed.read_text()
    assert "\r" not in text and [int(m) for m in re.findall(r"step (\d+)/16 ", text)] == [16]


def test_eval_explore_and_classifier_logs_are_plain_lines(trained, tmp_path):
    # eval first trains the reference classifier (its per-epoch lines), then evaluates.
    checkpoint = trained[1] / "step_000012.pt"
    log = tmp_path / "eval.log"
    done = _run_logged(["eval", str(checkpoint), "--dataset", "digits", "-n", "40", "--pr-samples", "0",
                        "--cache-dir", str(tmp_path / "cache"), "--classifier-epochs", "1",
                        "--classifier-train-n", "100", "--out", str(tmp_path / "eval.json")], log)
    text = log.read_text()
    assert "\r" not in text and "classifier epoch 1/1" in text
    assert "conditional accuracy" in done.stdout
    log = tmp_path / "explore.log"
    _run_logged(["explore", str(checkpoint), "--out", str(tmp_path / "explore"), "--rows", "2", "--steps", "3"], log)
    assert "\r" not in log.read_text()
