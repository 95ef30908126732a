"""`tokenmdp status`: each stage's progress read from the run directory, who writes it, where a re-run picks up."""

import json
import os

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config
from pipelines.run_lock import sole_writer, writer
from pipelines.status import NotARun, run_status


@pytest.fixture
def half_run(sft_run):
    """The tiny run's pretraining and SFT, its config written as `tokenmdp run` writes it."""
    (sft_run / "config.json").write_text(json.dumps(load_config("tiny").model_dump()))
    return sft_run


def test_each_stage_reads_as_far_as_its_checkpoint_got(half_run):
    found = run_status(half_run)
    cfg = load_config("tiny")
    states = {s.stage: (s.state, s.done, s.total) for s in found.stages}
    assert states == {
        "pretrain": ("done", cfg.pretrain.steps, cfg.pretrain.steps),
        "sft": ("done", cfg.sft.steps, cfg.sft.steps),
        "preferences": ("not started", 0, 1),
        "reward": ("not started", 0, cfg.reward.steps),
        "rlhf": ("not started", 0, cfg.rl.iterations),
    }
    assert found.resumes_at == "preferences" and found.writer is None and found.model_uri is None

    path = half_run / "sft" / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    torch.save(state | {"step": 100}, path)  # as if killed at step 100
    found = run_status(half_run)
    assert found.resumes_at == "sft" and found.stages[1].state == "partial" and found.stages[1].done == 100
    result = CliRunner().invoke(app, ["status", str(half_run)])
    assert result.exit_code == 0 and "picks up at sft (100 of" in result.output


def test_status_says_when_the_over_optimisation_watch_warned(half_run):
    assert run_status(half_run).overoptimised is None
    watched = {"iteration": 12, "gold_peak_iteration": 7, "gold_at_peak": 0.22, "gold_now": 0.12, "proxy_rise": 0.3}
    (half_run / "rlhf").mkdir()
    (half_run / "rlhf" / "overoptimised.json").write_text(json.dumps(watched))  # as the watch writes it mid-run
    assert run_status(half_run).overoptimised == watched
    shown = CliRunner().invoke(app, ["status", str(half_run), "--json"])
    assert json.loads(shown.stdout)["overoptimised"] == watched
    said = " ".join(CliRunner().invoke(app, ["status", str(half_run)]).output.split())
    assert "watch warned at iteration 12: the gold reward peaked at iteration 7 (0.220, 0.120 then)" in said
    assert "while the RM's rose +0.300" in said


def test_a_command_writing_the_run_is_named_while_it_writes(half_run):
    with sole_writer(half_run):
        assert writer(half_run).startswith(f"pid {os.getpid()} on ")
        assert json.loads(CliRunner().invoke(app, ["status", str(half_run), "--json"]).output)["writer"]
    assert writer(half_run) is None
    with sole_writer(half_run):  # looking did not keep it
        pass


def test_a_directory_that_holds_no_run_is_refused(tmp_path):
    with pytest.raises(NotARun, match=r"config\.json"):
        run_status(tmp_path)
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    said = " ".join(result.output.replace("│", " ").split())  # the message as one line, out of its box
    assert result.exit_code == 2 and "has no config.json: pass a run directory" in said


def test_ctrl_c_says_where_the_run_stopped_and_leaves_it_resumable(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "cli.main", "run", "tiny", "--out", str(out),
               "--set", "pretrain.steps=100000", "--set", "pretrain.checkpoint_every=5"]  # fmt: skip
    started = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not ((out / "config.json").is_file() and run_status(out).stages[0].done >= 5):
        time.sleep(0.5)
    started.send_signal(signal.SIGINT)
    _, err = started.communicate(timeout=60)
    assert started.returncode == 130, err
    assert "interrupted at pretrain (" in err and "steps checkpointed); the same command resumes" in err
    assert run_status(out).writer is None
