"""One writer per run directory: a second is refused with who holds it; a killed holder frees it."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from cli.main import app
from pipelines.run_lock import RunDirBusy, sole_writer

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipelines.run_lock import sole_writer
    with sole_writer(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_second_writer_is_refused_until_the_first_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=f"is being written by pid {holder.pid} on "), sole_writer(tmp_path):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # as a run killed mid-stage: no cleanup runs
        holder.wait()
    with sole_writer(tmp_path):  # the kernel dropped the lock with its holder
        pass


def test_the_same_process_may_write_again_once_done(tmp_path):
    with sole_writer(tmp_path):
        pass
    with sole_writer(tmp_path):
        pass


@pytest.mark.parametrize("command", [["run"], ["sft"], ["rlhf"], ["reward-curve"]])
def test_a_command_writing_into_a_held_run_directory_is_a_usage_error(tmp_path, command):
    with sole_writer(tmp_path):
        result = CliRunner().invoke(app, [*command, "tiny", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"pid {os.getpid()}" in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "config.json").exists()  # refused before it wrote anything
