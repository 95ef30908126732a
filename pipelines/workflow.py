"""The orchestrated workflow: every stage in order, each resumable, one summary at the end.

pretrain -> SFT -> preference collection -> reward model -> RLHF, each into its own
directory of the run and its own MLflow run, nested under one parent run. A finished
stage only reports (re-evaluates); a stage killed mid-way continues from its last
checkpoint in the same MLflow run. `summary.json`'s wall seconds are those spent in each
stage over every run of the directory (kept in `wall_seconds.json`; the part of a stage a
kill cut short is not counted). At the end the final policy is registered in the
MLflow Model Registry (a pyfunc model carrying the checkpoint) and the report's plots
are logged beside `summary.json`.

    tokenmdp run demo
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from algos.overoptimisation import turning_point
from conf.schema import Config
from pipelines import pretrain, report, reward, rl_watch, rlhf, sft
from pipelines.data_files import check_files_first
from pipelines.fork import FORK_RECORD, fork
from pipelines.progress import duration
from pipelines.register import provenance, register_checkpoint
from pipelines.rl_metrics import rm_agreement_over
from pipelines.run_config import REGISTERED, checkpointed, guard_run_dir
from pipelines.status import stopped_at, watch_record
from pipelines.tracking import default_tracking_uri, stage_run

console = Console()
POLICY_KEYS = ("gold_pass_rate", "gold_pass_rate_stderr", "sampled_pass_at_1", "format_rate", "rate_114514")
# practised: greedy on the RL prompts of its first evaluation window, RL's policy and SFT's (rules vs answers)
RLHF_KEYS = (
    "gold_pass_rate", "gold_pass_rate_stderr", "format_rate", "rate_114514", "gain_over_sft", "gain_over_sft_stderr",
    "fixed_over_sft", "broken_over_sft", "practised_pass_rate", "practised_pass_rate_sft",
)  # fmt: skip
REWARD_KEYS = (
    "gold_accuracy", "gold_accuracy_stderr", "label_accuracy", "gold_accuracy_format", "gold_accuracy_correctness",
    "cross_prompt_accuracy",
)  # fmt: skip


def main(cfg: Config, run_dir: Path, tracking_uri: str | None = None, from_run: Path | None = None) -> dict:
    """Every stage into `run_dir`; `from_run` first copies the stages it trained as `cfg` would (`pipelines.fork`)."""
    guard_run_dir(run_dir, cfg.model_dump())
    if from_run is not None:
        reused = fork(from_run, cfg, run_dir)
        console.print(f"reusing {', '.join(reused) or 'no stage'} of {from_run}; training the rest")
    check_files_first(cfg, run_dir)
    uri = tracking_uri or default_tracking_uri()
    with stage_run(run_dir, experiment=cfg.name, run_name="pipeline", tracking_uri=uri):
        import mlflow

        summary, finals = _stages(cfg, run_dir, uri)
        origin = run_dir / FORK_RECORD
        if origin.is_file():
            summary["forked_from"] = json.loads(origin.read_text())
        summary["model_uri"] = register(cfg, run_dir)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        mlflow.log_artifact(str(run_dir / "summary.json"))
        mlflow.log_artifact(str(run_dir / "config.json"))
        for plot in plots(summary, finals, run_dir, uri):
            mlflow.log_artifact(str(plot), artifact_path="report")
    print_summary(summary, run_dir)
    return summary


def register(cfg: Config, run_dir: Path) -> str:
    """Register the final policy once per run directory (a run trained on registers its new end as the next
    version), tagged with the run directory and the iteration; the URI is what `tokenmdp serve --model` takes."""
    marker = run_dir / REGISTERED
    if marker.is_file():
        return marker.read_text().strip()
    final = run_dir / "rlhf" / "checkpoint.pt"
    iteration = checkpointed(run_dir, "rlhf")
    uri = register_checkpoint(final, f"tokenmdp-{cfg.name}", provenance(str((run_dir / "rlhf").resolve()), iteration))
    marker.write_text(uri)
    return uri


def plots(summary: dict, finals: dict[str, dict], run_dir: Path, uri: str) -> list[Path]:
    """The RLHF curves from its MLflow run, the per-template rates from the stages' final metrics
    (a stage copied from another run has no curve of its own in this run's MLflow)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    return [
        report.rlhf_curves(client, summary["stages"]["rlhf"]["run_id"], out / "rlhf_curves.png"),
        report.per_template(finals["sft"], finals["rlhf"], out / "per_template.png"),
    ]


def rlhf_over_iterations(run_id: str, uri: str, window: int) -> dict[str, float | int | None]:
    """Per-iteration RL diagnostics summed up over the whole run (from MLflow, so a resumed run counts every
    iteration): the mean share of groups with no advantage and of the iteration spent in sync and buffer, the
    largest share of actions rare in pretraining, the largest gap between the sampler's and the learner's
    log-probs of an action before an update (float rounding when on-policy), the iteration where the training
    gold reward (averaged over `window`) peaked, the RM's refreshes and labels (iterated RLHF), and the RM's
    agreement with the grader on the policy's own answers over the first and the last quarter of the run. None
    where the run has no such history (a forked stage, a frozen RM)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)

    def over(key: str, reduce) -> float | None:
        values = [m.value for m in client.get_metric_history(run_id, key)]
        return reduce(values) if values else None

    steps, gold, proxy = rl_watch.reward_history(client, run_id)
    turn = turning_point(gold, proxy, window) if steps else None
    return {
        "zero_advantage_groups_mean": over("rl/zero_advantage_groups", lambda v: sum(v) / len(v)),
        "sync_buffer_share_mean": over("time/sync_buffer_share", lambda v: sum(v) / len(v)),
        "rare_action_rate_max": over("rl/rare_action_rate", max),
        "sampler_gap_max": over("rl/sampler_gap_max", max),
        "gold_peak_iteration": steps[turn.peak] if turn else None,
        # iterated RLHF (`rl.rm_refresh`): how often the RM learnt the policy's answers, and the labels it took
        "rm_refreshes": over("rm/version", lambda v: int(max(v))),
        "rm_refresh_labels": over("rm_refresh/labels", lambda v: int(max(v))),
    } | rm_agreement_over(client, run_id)


def _stages(cfg: Config, run_dir: Path, uri: str) -> tuple[dict, dict[str, dict]]:
    """Run (or report) every stage; returns the summary and the SFT and RLHF stages' final metrics."""
    # Seconds spent in each stage over every `run` of this directory: a re-run that finds a
    # stage finished adds only its report, not a wall time of its own in place of the training's.
    wall_file = run_dir / "wall_seconds.json"
    wall: dict[str, float] = json.loads(wall_file.read_text()) if wall_file.is_file() else {}

    def timed(name: str, stage, *args, **kwargs):
        print(f"stage {name}: started", file=sys.stderr, flush=True)
        start = time.perf_counter()
        out = stage(*args, **kwargs)
        seconds = time.perf_counter() - start
        wall[name] = wall.get(name, 0.0) + seconds
        wall_file.write_text(json.dumps(wall, indent=2))
        print(f"stage {name}: ended after {duration(seconds)}", file=sys.stderr, flush=True)
        return out

    # --- pretraining, then SFT (audited against pretraining's actions) ------------------
    pre = timed("pretrain", pretrain.main, cfg, run_dir, tracking_uri=uri)
    tuned = timed("sft", sft.main, cfg, run_dir, tracking_uri=uri)
    # --- on-policy preference pairs and the reward model --------------------------------
    rm = timed("reward", reward.main, cfg, run_dir, tracking_uri=uri) if cfg.rl.reward_source == "rm" else {}
    # --- RLHF on Ray actors ---------------------------------------------------------------
    rl = timed("rlhf", rlhf.main, cfg, run_dir, tracking_uri=uri)
    summary = {
        "stages": {
            "pretrain": {"val_loss": pre.get("eval/val_loss"), "run_id": pre["run_id"]},
            "sft": {key: tuned.get(f"eval/{key}") for key in POLICY_KEYS} | {"run_id": tuned["run_id"]},
            "reward": {key: rm.get(f"rm/{key}") for key in REWARD_KEYS} | {"run_id": rm.get("run_id")},
            "rlhf": {key: rl.get(f"eval/{key}") for key in RLHF_KEYS}
            | {
                "kl": rl.get("rl/kl"),
                "kl_exact": rl.get("rl/kl_exact"),  # the same without the sampled estimate's noise
                "reward_proxy": rl.get("reward/proxy"),
                "reward_gold": rl.get("reward/gold"),
                "max_staleness": rl.get("buffer/max_staleness"),  # measured: the oldest batch served
                "run_id": rl["run_id"],
            }
            | rlhf_over_iterations(rl["run_id"], uri, cfg.rl.watch_window)
            | {"overoptimised_at": (watch_record(run_dir) or {}).get("iteration"), "stopped_at": stopped_at(run_dir)},
        },
        "wall_seconds": {k: round(v, 1) for k, v in wall.items()},
    }
    return summary, {"sft": tuned, "rlhf": rl}


def print_summary(summary: dict, run_dir: Path) -> None:
    table = Table(title=f"TokenMDP run: {run_dir}  model: {summary.get('model_uri')}")
    for col in ("stage", "metric", "value"):
        table.add_column(col)
    for stage, metrics in summary["stages"].items():
        for key, value in metrics.items():
            if key != "run_id":
                table.add_row(stage, key, f"{value:.3f}" if isinstance(value, float) else str(value))
        if stage in summary["wall_seconds"]:
            table.add_row(stage, "wall seconds", str(summary["wall_seconds"][stage]))
    console.print(table)
