"""A stage's own data file held to the version its checkpoint read."""

import pytest
import torch

from pipelines.data_files import data_to_read, text_digest
from world.user_data import DataFileError

SETTING = "sft.extra_questions"


def words(text: str, path) -> list[str]:
    return text.split()


def test_a_stopped_stage_resumes_only_on_the_text_it_read_and_a_finished_one_reads_nothing(tmp_path):
    mine, checkpoint = tmp_path / "mine.txt", tmp_path / "checkpoint.pt"
    mine.write_text("1 2 3\n")
    read = text_digest("1 2 3\n")
    assert len(read) == 64 and read != text_digest("1 2 4\n")
    assert data_to_read(SETTING, str(mine), checkpoint, 5, words) == (["1", "2", "3"], read)  # a fresh stage
    torch.save({"step": 2, "extra_questions_sha256": read}, checkpoint)
    assert data_to_read(SETTING, str(mine), checkpoint, 5, words)[0] == ["1", "2", "3"]  # resumed, the same text
    mine.write_text("1 2 4\n")  # edited while the stage was stopped
    with pytest.raises(DataFileError, match=f"read another version of {SETTING} up to step 2"):
        data_to_read(SETTING, str(mine), checkpoint, 5, words)
    torch.save({"step": 5, "extra_questions_sha256": "kept"}, checkpoint)  # finished: the file is not read
    assert data_to_read(SETTING, str(tmp_path / "gone.txt"), checkpoint, 5, words) == (None, "kept")
