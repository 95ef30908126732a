"""Where a policy argument points: the name and version a checkpoint file is served and shown as."""

from pathlib import Path

from pipelines.policy_source import file_model_name


def test_a_checkpoint_file_is_named_by_its_run_and_stage_or_iteration():
    assert file_model_name(Path("/x/runs/demo/rlhf/checkpoint.pt")) == ("demo", "rlhf")
    assert file_model_name(Path("/x/runs/demo/rlhf/snapshots/iteration-00020.pt")) == ("demo", "rlhf/iteration-00020")
    assert file_model_name(Path("/x/exports/best.pt")) == ("exports", "best")
