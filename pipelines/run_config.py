"""A run directory remembers the config its stages were trained under, and refuses to mix two.

Each config field is read first by one stage (`model.*` by pretraining, `reward.prompts`
by preference collection, `rl.*` by RLHF): a field may change while no stage that reads
it is in the directory yet (RL's settings before RLHF has run), never once one is. Thread
counts change how fast, not what, a stage trains, and do not count. The same rule decides
which stages a fork may copy (`pipelines.fork`).
"""

from __future__ import annotations

import json
from pathlib import Path

from conf.load import with_defaults
from conf.schema import Config

POLICY_STAGES = ("sft", "rlhf")  # the stages whose checkpoint is a policy


class ConfigChanged(ValueError):
    """The run directory holds stages trained under another config: resuming would mix the two."""


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two resolved configs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def guard_config(path: Path, resolved: dict) -> None:
    """Save the resolved config at `path`; a directory made with another one is refused, not mixed.

    Fields added to the schema since the directory was made count at their defaults (`with_defaults`).
    """
    if path.is_file():
        changed = config_differences(with_defaults(json.loads(path.read_text())), resolved)
        if changed:
            raise ConfigChanged(
                f"{path.parent} was made with another config (differs in {', '.join(changed[:8])}); "
                "choose a new directory with --out, or delete this one"
            )
    path.write_text(json.dumps(resolved, indent=2))


STAGES = ("pretrain", "sft", "preferences", "reward", "rlhf")
# The first stage that reads a field, by its dotted name or a prefix of it (the longest wins);
# None: no stage trains on it (evaluation budgets, the endpoint, the run's name).
FIRST_READER: dict[str, str | None] = {
    "seed": "pretrain", "world": "pretrain", "model": "pretrain", "pretrain": "pretrain",
    "world.bank_size": "sft", "world.feedback_share": "sft", "world.max_difficulty": "sft", "sft": "sft",
    "world.label_noise": "preferences", "reward.prompts": "preferences", "reward.heldout_prompts": "preferences",
    "reward.responses_per_prompt": "preferences", "reward.temperature": "preferences",
    "evaluate.max_new_tokens": "preferences",  # the preference samples' response budget
    "reward": "reward", "rl": "rlhf",
    "name": None, "serve": None, "evaluate": None,
}  # fmt: skip
# How a stage runs or is watched, not what it trains, by a field's last name: free to change at a resume (a run
# begun on a cluster may end on a laptop), and a fork changing only these retrains nothing.
NOT_TRAINED = (
    "threads", "actor_restarts", "num_cpus", "num_gpus", "num_cpus_per_learner", "num_gpus_per_learner",
    "placement_strategy", "sync", "checkpoint_every", "watch_drop", "watch_window",
)  # fmt: skip
WATCH = ("rl.watch_drop", "rl.watch_window")  # only watch, unless `rl.watch_stop` ends RLHF where the watch warns
# Free to change at a resume, but a fork retrains the stage: actor counts deal the prompts to the samplers'
# random streams otherwise (the same algorithm, not the digit of a run never stopped), snapshots kept
# from a resume on are what a fork asking for them would not have, and a run whose watch stopped it trains on
# once `rl.watch_stop` is off, where a fork asking for the stop must train to find where its watch warns.
RESUMABLE_CHANGES = ("replicas", "num_learners", "snapshot_every", "watch_stop")
# The config field that says how long each trained stage runs, and the checkpoint key that says how far it got.
LENGTH = {"pretrain": ("pretrain", "steps", "step"), "sft": ("sft", "steps", "step"),
          "reward": ("reward", "steps", "step"), "rlhf": ("rl", "iterations", "iteration")}  # fmt: skip
# Lengths a trained stage may take on: RLHF's learning rate is constant and nothing else reads how many
# iterations it runs, so a longer run is the shorter one continued, to the digit (tested). The other
# stages' learning rates decay over their `steps` (warm-up, cosine): more steps is another schedule.
EXTENDABLE = {"rl.iterations": "rlhf"}
REGISTERED = "model_uri"  # the run directory's file naming the registered model of its final policy


def checkpointed(run_dir: Path, stage: str) -> int:
    """How many steps (iterations for RLHF) `stage` has checkpointed in `run_dir`; 0 without a checkpoint."""
    import torch

    path = run_dir / stage / "checkpoint.pt"
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return int(state.get(LENGTH[stage][2], 0))


def length_field(stage: str) -> str:
    """The dotted config field that says how long `stage` trains, e.g. "rl.iterations"."""
    section, field, _ = LENGTH[stage]
    return f"{section}.{field}"


def first_reader(field: str) -> str | None:
    """The first stage whose training reads `field` (a dotted config name); unknown fields: every stage."""
    parts = field.split(".")
    if parts[-1] in NOT_TRAINED:
        return None
    for n in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:n])) in FIRST_READER:
            return FIRST_READER[prefix]
    return STAGES[0]


def reusable_stages(source_config: dict, config: dict) -> tuple[str, ...]:
    """The leading stages that `source_config` trained exactly as `config` would train them."""
    source = with_defaults(source_config)
    changed = config_differences(source, config)
    if any(c.get("rl", {}).get("watch_stop") for c in (source, config)) and set(changed) & set(WATCH):
        changed.append("rl")  # where the watch warns is where RLHF stops: its settings train
    return _unchanged_stages(changed)


def _unchanged_stages(changed: list[str]) -> tuple[str, ...]:
    """The stages before the first one that reads any of the `changed` fields."""
    readers = {first_reader(f) for f in changed}
    first = min((STAGES.index(r) for r in readers if r is not None), default=len(STAGES))
    return STAGES[:first]


def trained_otherwise(run_dir: Path, config: dict, through: str = STAGES[-1]) -> tuple[list[str], list[str]]:
    """The stages up to `through` in `run_dir` trained under a saved config that differs from `config` in a
    field they read, and those fields (read at or before the last such stage); ([], []) when none."""
    saved = saved_config(run_dir)
    if saved is None:
        return [], []
    changed = [f for f in config_differences(with_defaults(saved), config) if not _continues(run_dir, f, config)]
    same = _unchanged_stages(changed)
    stages = [s for s in STAGES[: STAGES.index(through) + 1] if (run_dir / s).is_dir() and s not in same]
    if not stages:
        return [], []
    last = STAGES.index(stages[-1])
    return stages, [f for f in changed if (r := first_reader(f)) is not None and STAGES.index(r) <= last]


def _continues(run_dir: Path, field: str, config: dict) -> bool:
    """Whether a changed `field` only changes how its stage goes on: on other actor counts, keeping snapshots
    from now on, or to a later end than it has trained."""
    if field.split(".")[-1] in RESUMABLE_CHANGES:
        return True
    if field not in EXTENDABLE:
        return False
    section, name = field.split(".")
    return config[section][name] >= checkpointed(run_dir, EXTENDABLE[field])


def _why(run_dir: Path, changed: list[str]) -> str:
    """What a refused change of a stage's length means, for the fields among `changed` that set one."""
    notes = []
    for stage in LENGTH:
        field = length_field(stage)
        if field not in changed:
            continue
        if field in EXTENDABLE:
            done = checkpointed(run_dir, stage)
            notes.append(f"{field} may grow, not fall below the {done:,} {stage} has trained")
        else:
            notes.append(f"{field} is the length of {stage}'s learning-rate schedule: another length is another run")
    return "".join(f"; {note}" for note in notes)


def require_trained_as(run_dir: Path, config: dict, through: str) -> None:
    """Refuse to read `run_dir`'s stages up to `through` if they were trained under a config that differs from
    `config` in a field they read; saves nothing (for tools that read those stages and train nothing kept)."""
    stages, changed = trained_otherwise(run_dir, config, through)
    if stages:
        raise ConfigChanged(
            f"{run_dir} holds {', '.join(stages)} trained under another config (differs in "
            f"{', '.join(changed[:8])}): read it with that config, or collect into a new directory with --out"
        )


def guard_run_dir(run_dir: Path, config: dict) -> None:
    """Save `config` as `run_dir`'s; refuse it if a stage already there was trained under a config that differs
    in a field the stage reads (stages not yet run may take new settings). An experiment's directory or one of its
    arms is refused: its experiment command writes it, and a run's config.json over an arm's would strand the arm."""
    _refuse_experiment_dirs(run_dir)
    stages, changed = trained_otherwise(run_dir, config)
    if stages:
        raise ConfigChanged(
            f"{run_dir} holds {', '.join(stages)} trained under another config (differs in "
            f"{', '.join(changed[:8])}{_why(run_dir, changed)}); choose a new directory with --out (--from "
            f"{run_dir} reuses what is unchanged), or delete this one"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))


def _refuse_experiment_dirs(run_dir: Path) -> None:
    saved = _saved(run_dir)
    if _wraps_an_arm(saved):
        parent = _saved(run_dir.parent)
        name = parent["experiment"] if is_experiment_record(parent) else "NAME"
        raise ConfigChanged(
            f"{run_dir} is an arm of the experiment in {run_dir.parent}, which trains and resumes it "
            f"(`tokenmdp experiment {name} --out {run_dir.parent}` with the config and options it was run with); "
            f"to train on from the arm, `tokenmdp run CONFIG --from {run_dir} --out NEW`"
        )
    if is_experiment_record(saved):
        raise ConfigChanged(
            f"{run_dir} holds the experiment {saved['experiment']}, not a run (`tokenmdp experiment "
            f"{saved['experiment']} --out {run_dir}` resumes it); choose another directory with --out"
        )


def forget_registration(run_dir: Path) -> str | None:
    """Drop the record of the registered final policy (when RLHF trains on past it); returns what it named.

    The registry keeps that version; the run registers its new final policy as the next one when it ends."""
    marker = run_dir / REGISTERED
    if not marker.is_file():
        return None
    uri = marker.read_text().strip()
    marker.unlink()
    return uri


class MissingStage(FileNotFoundError):
    """A stage needs the checkpoint of one before it, and the run directory does not hold it."""


def trained_checkpoint(run_dir: Path, stage: str, needed_by: str) -> Path:
    """`run_dir/<stage>/checkpoint.pt`, or a MissingStage that names the command making it: a stage run
    out of order otherwise ends in a long traceback about a file `torch.load` could not open."""
    path = run_dir / stage / "checkpoint.pt"
    if not path.is_file():
        raise MissingStage(
            f"{needed_by} needs the {stage} stage, and {run_dir} does not hold it ({path} is missing): "
            f"run `tokenmdp {stage}` with the same config and --out first, or `tokenmdp run` for every stage"
        )
    return path


class RunDirError(ValueError):
    """A run directory cannot serve a reading command (trace, compare, exam) as asked."""


def saved_config(run_dir: Path) -> dict | None:
    """The config saved in a run directory's `config.json`, None without one. A run's file is the config itself;
    an experiment arm's wraps it beside the arm's variant (`experiments/runner.py`), and an arm is a run
    directory like any other to the commands that read runs."""
    saved = _saved(run_dir)
    return saved["config"] if _wraps_an_arm(saved) else saved


def is_arm(run_dir: Path) -> bool:
    """Whether the directory is an experiment's arm (its experiment's command trains and resumes it)."""
    return _wraps_an_arm(_saved(run_dir))


def _saved(run_dir: Path) -> object:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def arm_record(variant: str, config: dict) -> dict:
    """What an experiment arm's `config.json` holds: its variant beside its config (read back by `saved_config`)."""
    return {"variant": variant, "config": config}


def _wraps_an_arm(saved: object) -> bool:
    return isinstance(saved, dict) and saved.keys() == {"variant", "config"}


def is_run_config(saved: object) -> bool:
    """A run's config as `tokenmdp run` and the stage commands save it (every section), not an experiment's own
    record (`is_experiment_record`)."""
    return isinstance(saved, dict) and {"world", "rl"} <= saved.keys()


def is_experiment_record(saved: object) -> bool:
    """An experiment directory's own `config.json` (`experiments/runner.py`): its name and base config."""
    return isinstance(saved, dict) and {"experiment", "base"} <= saved.keys()


def run_config_dict(run_dir: Path) -> dict:
    """The config a run directory's stages were trained under, as saved; a RunDirError for a directory that holds
    none, or holds an experiment's record."""
    saved = saved_config(run_dir)
    if saved is None:
        raise RunDirError(
            f"{run_dir} has no config.json: pass a run directory made by `tokenmdp run` or a stage command"
        )
    if is_experiment_record(saved):
        raise RunDirError(f"{run_dir} holds an experiment, not a run: pass one of its arms' directories")
    return saved


def load_run_config(run_dir: Path) -> Config:
    """The config a run directory's stages were trained under, as the pydantic model (new fields at their defaults)."""
    return Config.model_validate(with_defaults(run_config_dict(run_dir)))


def policy_checkpoint(run_dir: Path, stage: str) -> Path:
    """The checkpoint of `stage`'s policy in a run directory, or a RunDirError saying why there is none."""
    if stage not in POLICY_STAGES:
        raise RunDirError(f"stage {stage!r} holds no policy; choose from {', '.join(POLICY_STAGES)}")
    path = run_dir / stage / "checkpoint.pt"
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no {stage} policy ({path} is missing): train that stage first")
    return path
