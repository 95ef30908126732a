"""What RLHF trained on, read back from MLflow: the rollouts table, and the answers the RM ranked wrongly.

    tokenmdp rollouts runs/demo                  # the last iteration's kept groups, as it scored them
    tokenmdp rollouts runs/demo --iteration 10
    tokenmdp rollouts runs/demo --misordered     # the pairs of answers the RM ranked against the grader
    tokenmdp rollouts runs/demo --kl --iteration 10   # the responses that carried iteration 10's KL

Every checkpoint of an RLHF run writes among its MLflow run's artifacts a table under `rollouts/`
of the first `TABLE_GROUPS` prompts of each iteration since the checkpoint before (every sampled
response with the reward it trained on, its gold reward, advantage, KL and the policy version that
drew it; runs before 2026-12-05 appended them to one `rollouts.json`), and, when the RM is the
reward, one under `rm_misordered/` with every pair of answers to one prompt, over all of those
iterations' groups, that the RM ranked against the grader. `reward/rm_agreement` counts those pairs; this
shows them: which wrong answer the RM put above which right one, on which prompt, when. That is
where a policy learning the RM's errors starts. And under `kl_sources/`, each iteration's `KL_SOURCES`
responses with the largest KL, action by action (log pi, log pi_ref, the estimate): where a spike in
`rl/kl` comes from.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from algos.ranking import pooled
from pipelines.rl_metrics import (
    KL_DIR,
    KL_SOURCES,
    MISORDERED_DIR,
    OLD_ROLLOUTS_TABLE,
    ROLLOUTS_DIR,
    Misordered,
    agreement_quarters,
    misordered,
    rm_agreement_history,
)
from pipelines.run_config import RunDirError, load_run_config
from pipelines.tracking import default_tracking_uri, logged_run_id, quiet_downloads, require_tracking_server


class RolloutsError(RunDirError):
    """The run has no rollouts table to read, or not the one asked for."""


@dataclass(frozen=True)
class LoggedRLHF:
    """A run directory's RLHF stage as its MLflow run holds it."""

    run_dir: Path
    run_id: str
    client: Any  # an mlflow.MlflowClient on the store the run logged to
    reward_source: str
    kl_estimator: str


def logged_rlhf(run_dir: Path, tracking_uri: str | None = None) -> LoggedRLHF:
    """The MLflow run `run_dir`'s RLHF logged into, or an error saying where to look for it."""
    import mlflow

    cfg = load_run_config(run_dir)  # a clear error for a folder that is not a run
    run_id = logged_run_id(run_dir / "rlhf")
    if run_id is None:
        raise RolloutsError(f"{run_dir} has no RLHF run yet: `tokenmdp rlhf` writes the rollouts table")
    uri = tracking_uri or default_tracking_uri()
    require_tracking_server(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise RolloutsError(
            f"the MLflow run {run_id} that {run_dir / 'rlhf'} logged into is not in the store at {uri}: "
            "set MLFLOW_TRACKING_URI to the store the run logged to"
        ) from None
    return LoggedRLHF(run_dir, run_id, client, cfg.rl.reward_source, cfg.rl.kl_estimator)


def read_table(run: LoggedRLHF, name: str) -> list[dict] | None:
    """A table the run logged (`tracking.log_rows`, `mlflow.log_table`), a dict per row, or the tables of a folder
    of them one after the other, in the files' order; None when it logged none by that name."""
    client = run.client
    listed = {f.path: f for f in client.list_artifacts(run.run_id)}
    if name not in listed:
        return None
    files = [name]
    if listed[name].is_dir:
        files = sorted(f.path for f in client.list_artifacts(run.run_id, name) if f.path.endswith(".json"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, quiet_downloads():
        for file in files:
            table = json.loads(Path(client.download_artifacts(run.run_id, file, tmp)).read_text())
            rows += [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    return rows


def table_rows(run: LoggedRLHF) -> list[dict]:
    """The run's rollouts table, a dict per response."""
    rows = read_table(run, ROLLOUTS_DIR) or read_table(run, OLD_ROLLOUTS_TABLE)
    if not rows:
        raise RolloutsError(f"{run.run_dir}'s RLHF run has no rollouts yet: they are written at each checkpoint")
    return rows


def iteration_rows(rows: list[dict], iteration: int | None) -> tuple[int, list[dict]]:
    """(the iteration shown, its rows): `iteration`'s, else the last one's."""
    kept = sorted({row["iteration"] for row in rows})
    if not kept:
        raise RolloutsError("the rollouts table is empty")
    chosen = kept[-1] if iteration is None else iteration
    if chosen not in kept:
        raise RolloutsError(f"the table holds iterations {kept[0]}..{kept[-1]}, not {iteration}")
    return chosen, [row for row in rows if row["iteration"] == chosen]


def logged_value(run: LoggedRLHF, key: str, iteration: int) -> float | None:
    """What the run logged of `key` at `iteration` (None where it logged none: a setting off, an older run)."""
    values = {m.step: m.value for m in run.client.get_metric_history(run.run_id, key)}
    return values.get(iteration)


def metric_at(run: LoggedRLHF, key: str, iteration: int) -> int | None:
    """A count the run logged at `iteration` (None where it logged none: a setting off)."""
    value = logged_value(run, key, iteration)
    return None if value is None else int(value)


def scoring_rm(run: LoggedRLHF, iteration: int) -> int | None:
    """How many refreshes were behind the RM that scored `iteration` (`reward/rm_version`, iterated RLHF); None
    for a run whose RM stayed as the reward stage trained it."""
    return metric_at(run, "reward/rm_version", iteration)


def drawn_rounds(run: LoggedRLHF, iteration: int) -> tuple[int, int] | None:
    """(rounds of prompts sampled, groups with signal trained on) at `iteration` under dynamic sampling, else None:
    the table then shows the first groups the learner took, not the first prompts asked."""
    rounds, groups = (metric_at(run, key, iteration) for key in ("rl/sample_rounds", "rl/signal_groups"))
    return None if rounds is None or groups is None else (rounds, groups)


@dataclass(frozen=True)
class KLSources:
    """An iteration's largest-KL responses (`rl_metrics.kl_source_rows`), with the iteration's KL beside them."""

    iteration: int
    kl: float | None  # `rl/kl`: the mean response's KL, over the rows the learner took
    exact: float | None  # `rl/kl_exact`: the same from the whole distributions, no sampled estimate
    share: float | None  # the share of the iteration's KL its `KL_SOURCES` largest responses carry
    estimator: str
    rows: list[dict]
    peak: tuple[int, float] | None  # the iteration of the table whose `rl/kl` was largest, and that KL: a spike


def kl_sources(run: LoggedRLHF, iteration: int | None) -> KLSources:
    """`iteration`'s (else the last logged one's) responses with the largest KL, read back from `kl_sources/`."""
    rows = read_table(run, KL_DIR)
    if not rows:
        raise RolloutsError(
            f"{run.run_dir}'s RLHF run has no KL table: it is written at each checkpoint (runs from before it was "
            "kept have none; `tokenmdp rollouts` without --kl shows each response's KL)"
        )
    shown, picked = iteration_rows(rows, iteration)
    kept = {row["iteration"] for row in rows}
    kl = {m.step: m.value for m in run.client.get_metric_history(run.run_id, "rl/kl") if m.step in kept}
    peak = max(kl.items(), key=lambda item: (item[1], -item[0])) if kl else None
    share, exact = (logged_value(run, key, shown) for key in (f"rl/kl_share_top{KL_SOURCES}", "rl/kl_exact"))
    return KLSources(shown, kl.get(shown), exact, share, run.kl_estimator, picked, peak)


def misordered_pairs(run: LoggedRLHF) -> tuple[list[Misordered], bool]:
    """(the pairs the RM ranked against the grader, newest first; whether they cover every group): from
    `rm_misordered/`, else (a run from before it) from the rollouts table's first groups only."""
    if run.reward_source != "rm":
        raise RolloutsError(f"{run.run_dir} rewards with the {run.reward_source} grader: nothing for an RM to misorder")
    logged = read_table(run, MISORDERED_DIR)
    if logged is not None:
        return sorted((Misordered(**row) for row in logged), key=lambda m: -m.iteration), True
    return misordered(table_rows(run)), False


@dataclass(frozen=True)
class Agreement:
    """`reward/rm_agreement` over the run: pooled, and over its first and last quarter."""

    rate: float | None
    pairs: int
    start: float | None
    end: float | None


def agreement(run: LoggedRLHF) -> Agreement | None:
    """The RM's agreement with the grader over every group the run scored; None when gold is the reward."""
    if run.reward_source != "rm":
        return None
    rates, pairs = rm_agreement_history(run.client, run.run_id)  # read once for both figures
    quarters = agreement_quarters(rates, pairs)
    return Agreement(
        pooled(rates, pairs), int(sum(pairs)), quarters["rm_agreement_start"], quarters["rm_agreement_end"]
    )


def pairs_file_lines(found: list[Misordered]) -> list[str]:
    """The misordered pairs as `reward.extra_pairs` reads them (`PROMPT -> BETTER > WORSE`), the grader's order,
    each pair of answers once (its newest iteration in the comment); a malformed answer has no such line."""
    lines, seen = [], set()
    for m in found:
        if m.above is None or m.below is None or (m.prompt, tuple(m.below), tuple(m.above)) in seen:
            continue
        seen.add((m.prompt, tuple(m.below), tuple(m.above)))
        better, worse = (" ".join(map(str, terms)) for terms in (m.below, m.above))
        note = f"# iteration {m.iteration}: the RM {m.above_reward:+.3f} above {m.below_reward:+.3f}"
        lines.append(f"{m.prompt} -> {better} > {worse}    {note}")
    return lines


def by_template(found: list[Misordered]) -> list[tuple[str, int]]:
    """The misordered response pairs by the template of their prompt's rule (the gold grader's), most first:
    which rules the RM has not learnt where the policy now answers."""
    from world.grader import analyze

    counts: dict[str, int] = {}
    for m in found:
        template = analyze([int(t) for t in m.prompt.split()]).template or "no rule"
        counts[template] = counts.get(template, 0) + m.pairs
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
