"""RLHF's over-optimisation watch: says so while it trains when the policy learns the RM's errors.

Every iteration reports the RM's (proxy) reward beside the gold grader's on the same samples; the watch
reads both as `algos.overoptimisation` does and warns once, on stderr and as the MLflow tag
`tokenmdp.overoptimised` and in `rlhf/overoptimised.json` (what `status` and `runs` read), when the
averaged gold reward has fallen `rl.watch_drop` below its peak while the averaged proxy reward rose since.
A resumed run reads the history it logged before from MLflow.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from algos.overoptimisation import Turn, overoptimised
from conf.schema import RLConfig
from pipelines.policy_source import snapshot_iteration
from pipelines.status import WATCH_FILE, stage_record

TAG = "tokenmdp.overoptimised"
REWARD_KEYS = ("reward/gold", "reward/proxy")  # what the watch reads of each iteration


@dataclass
class Watch:
    """The training rewards so far, by iteration, and whether the warning was given."""

    window: int
    drop: float | None
    steps: list[int] = field(default_factory=list)
    gold: list[float] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    warned: bool = False

    def observe(self, iteration: int, gold: float, proxy: float) -> Turn | None:
        """Add an iteration's rewards; the turn the first time the watch finds one, else None."""
        self.steps.append(iteration)
        self.gold.append(gold)
        self.proxy.append(proxy)
        if self.drop is None or self.warned:
            return None
        turn = overoptimised(self.gold, self.proxy, self.window, self.drop)
        self.warned = turn is not None
        return turn

    def peak_iteration(self, turn: Turn) -> int:
        return self.steps[turn.peak]


def reward_history(client, run_id: str, upto: int | None = None) -> tuple[list[int], list[float], list[float]]:
    """(iterations, gold, proxy) rewards as the run logged them to MLflow, by iteration, up to `upto` (the last
    write of a step counts: a run killed after logging but before its checkpoint logs it again)."""
    gold, proxy = ({m.step: m.value for m in client.get_metric_history(run_id, key)} for key in REWARD_KEYS)
    steps = sorted(s for s in gold.keys() & proxy.keys() if upto is None or s <= upto)
    return steps, [gold[s] for s in steps], [proxy[s] for s in steps]


def resumed_watch(rl: RLConfig, client, run_id: str, upto: int, stage_dir: Path) -> Watch:
    """The watch of a run resumed at iteration `upto`: its rewards of iterations 1..upto from MLflow, and whether
    it warned already (the stage directory's record, written with the run's tag, so known in any store). A
    warning after `upto` (the run was killed before its next checkpoint) is given again: the resumed run
    redoes those iterations, to the digit, and a stop (`rl.watch_stop`) must happen where it is checkpointed."""
    steps, gold, proxy = reward_history(client, run_id, upto)
    seen = stage_record(stage_dir)
    warned = seen is not None and seen["iteration"] <= upto
    return Watch(rl.watch_window, rl.watch_drop, steps, gold, proxy, warned)


def warning(
    turn: Turn, watch: Watch, iteration: int, snapshots: list[Path], snapshot_every: int = 0, stopping: bool = False
) -> str:
    """What the watch says: where gold peaked, how far both rewards went since, and what to do."""
    peak = watch.peak_iteration(turn)
    line = (
        f"rlhf iteration {iteration}: over-optimisation: the gold reward ({watch.window}-iteration mean) peaked at "
        f"iteration {peak} ({turn.gold_at_peak:.3f}) and is {turn.gold_now:.3f} now, while the RM's reward rose "
        f"{turn.proxy_rise:+.3f} since: the policy is learning the reward model's errors. "
    )
    line += "RLHF stops here (rl.watch_stop). Raise rl.kl_coef" if stopping else "Raise rl.kl_coef"
    if snapshots:
        nearest = min(snapshots, key=lambda path: abs(snapshot_iteration(path) - peak))
        return f"{line}, or take the policy kept at iteration {snapshot_iteration(nearest)} ({nearest})"
    if snapshot_every:
        return f"{line}; the first policy kept (rl.snapshot_every) will be iteration {snapshot_every}'s"
    return f"{line}, or keep snapshots (rl.snapshot_every) to take the policy of the peak"


def record(turn: Turn, watch: Watch, iteration: int, stopping: bool = False) -> dict[str, float | int | bool]:
    """The MLflow tag's value (and the summary's): when the watch warned, what it saw, and whether RLHF stopped."""
    return {
        "iteration": iteration,
        "gold_peak_iteration": watch.peak_iteration(turn),
        "gold_at_peak": round(turn.gold_at_peak, 4),
        "gold_now": round(turn.gold_now, 4),
        "proxy_rise": round(turn.proxy_rise, 4),
        "stopped": stopping,
    }


def warn(
    turn: Turn, watch: Watch, iteration: int, stage_dir: Path, snapshots: list[Path], snapshot_every: int = 0,
    stopping: bool = False,
) -> None:  # fmt: skip
    """Say it on stderr, tag the active MLflow run and keep the record in the stage directory."""
    import mlflow

    print(warning(turn, watch, iteration, snapshots, snapshot_every, stopping), file=sys.stderr, flush=True)
    said = json.dumps(record(turn, watch, iteration, stopping))
    mlflow.set_tag(TAG, said)
    (stage_dir / WATCH_FILE).write_text(said)


def forget_stop(stage_dir: Path) -> None:
    """A run its watch stopped, trained on once `rl.watch_stop` is off: the record keeps the warning, not the stop."""
    import mlflow

    seen = stage_record(stage_dir) or {}
    if seen.get("stopped"):
        said = json.dumps(seen | {"stopped": False})
        mlflow.set_tag(TAG, said)
        (stage_dir / WATCH_FILE).write_text(said)
