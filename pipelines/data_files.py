"""A stage's own data file (`world.extra_sequences`, `sft.extra_questions`): read once, held to one version.

The file is read when the stage starts with steps left, so a bad line stops it before anything
is trained or logged. Its sha256 goes into the stage's checkpoint: a stopped stage refuses to
resume on an edited file (its first steps read the other text), and a finished one reads
nothing more, so it no longer needs the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from conf.schema import Config
from pipelines.run_config import LENGTH, checkpointed
from world.user_data import DataFileError, parse_line, parse_lines, parse_pair_line, parse_sequence, read_text

T = TypeVar("T")
# Each data file setting: the stage that reads it, what its lines hold, and how one line is read.
DATA_FILES = (
    ("world", "extra_sequences", "pretrain", "sequences", parse_sequence),
    ("sft", "extra_questions", "sft", "questions", parse_line),
    ("reward", "extra_pairs", "reward", "pairs", parse_pair_line),
)


def digest_key(setting: str) -> str:
    """The checkpoint key of a setting's file digest: `world.extra_sequences` -> `extra_sequences_sha256`."""
    return f"{setting.rsplit('.', 1)[-1]}_sha256"


def text_digest(text: str) -> str:
    """The sha256 a checkpoint keeps of the data file's text it read."""
    return hashlib.sha256(text.encode()).hexdigest()


def data_to_read(
    setting: str, path: str | None, checkpoint: Path, steps: int, parse: Callable[[str, Path], T]
) -> tuple[T | None, str | None]:
    """`parse(text, path)` of the file `setting` names and the text's sha256, if the stage has steps left;
    (None, the digest the checkpoint holds) if it is finished; (None, None) without a file."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True) if checkpoint.is_file() else {}
    if saved.get("step", 0) >= steps:
        return None, saved.get(digest_key(setting))
    if path is None:
        parsed, digest = None, None
    else:
        text = read_text(Path(path))
        parsed, digest = parse(text, Path(path)), text_digest(text)
    if saved and saved.get(digest_key(setting)) != digest:
        raise DataFileError(
            str(path),
            [
                f"this stage read another version of {setting} up to step {saved['step']} (the file's text changed "
                "since); put that version back, or train into a new --out"
            ],
        )
    return parsed, digest


def as_sft_read(cfg: Config, run_dir: Path) -> tuple[dict, str | None]:
    """SFT's checkpoint and the text of `sft.extra_questions` as SFT read it (None: SFT read no file), for
    PPO-ptx, which trains on what SFT trained on. SFT's checkpoint keeps the text's sha256: an edited file, or a
    setting that names another file or none, is refused with what to set."""
    saved = torch.load(run_dir / "sft" / "checkpoint.pt", map_location="cpu", weights_only=False, mmap=True)
    read_by_sft, path = saved.get(digest_key("sft.extra_questions")), cfg.sft.extra_questions
    if path is None and read_by_sft is None:
        return saved, None
    text = "" if path is None else read_text(Path(path))
    if path is None or text_digest(text) != read_by_sft:
        said = "none" if read_by_sft is None else f"a file of sha256 {read_by_sft[:12]}…"
        raise DataFileError(
            str(path or "sft.extra_questions"),
            [
                f"PPO-ptx (rl.ptx_coef) trains on the questions SFT read, and SFT read {said}: set "
                "sft.extra_questions to the file as SFT read it, or set rl.ptx_coef=0"
            ],
        )
    return saved, text


def check_files_first(cfg: Config, run_dir: Path) -> None:
    """Every data file a stage still to train will read, read and parsed line by line before the first stage:
    a missing file or a bad line is refused in seconds, not when its stage starts after pretraining's minutes.
    So is a file of SFT's edited since SFT read it, when PPO-ptx will read it. What needs a trained stage (the
    audit against pretraining, the held-out checks) stays with that stage."""
    for section, field, stage, what, parse in DATA_FILES:
        path = getattr(getattr(cfg, section), field)
        if path is None or not any(_to_train(cfg, run_dir, s) for s in readers(cfg, f"{section}.{field}", stage)):
            continue
        parse_lines(read_text(Path(path)), path, parse, what)
    if cfg.rl.ptx_coef and not _to_train(cfg, run_dir, "sft") and _to_train(cfg, run_dir, "rlhf"):
        as_sft_read(cfg, run_dir)


def readers(cfg: Config, setting: str, stage: str) -> tuple[str, ...]:
    """The stages that read a setting's file: its own, and RLHF for SFT's questions under PPO-ptx (`rl_ptx`)."""
    return (stage, "rlhf") if setting == "sft.extra_questions" and cfg.rl.ptx_coef else (stage,)


def _to_train(cfg: Config, run_dir: Path, stage: str) -> bool:
    section, length, _ = LENGTH[stage]
    return checkpointed(run_dir, stage) < getattr(getattr(cfg, section), length)
