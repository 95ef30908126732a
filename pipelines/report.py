"""The run report: plots of the RLHF stage and of the exam before and after it, as PNG files.

Drawn from what MLflow recorded (so a resumed run plots its whole history): gold and
proxy reward, the greedy pass rate on held-out and on practised prompts, KL to the
reference, the 114514 rate, the share of groups with no advantage, of actions rare in
pretraining and of the policy's answer pairs the RM ranks as the grader does over iterations, and the pass rate
per exam template after SFT and after RLHF. `tokenmdp best-of --plot` draws its curve here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from pipelines.best_of import BestOf


def history(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in points], [m.value for m in points]


def rlhf_curves(client, rlhf_run_id: str, out: Path) -> Path:
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for key, label in (("reward/gold", "gold reward (train prompts)"), ("reward/proxy", "proxy reward (RM)")):
        axes[0].plot(*history(client, rlhf_run_id, key), label=label)
    axes[0].plot(*history(client, rlhf_run_id, "eval/gold_pass_rate"), "o-", label="gold pass rate (held-out)")
    practised = history(client, rlhf_run_id, "eval/practised_pass_rate")
    if practised[0]:  # runs before the metric existed have none
        axes[0].plot(*practised, "s--", label="gold pass rate (practised prompts)")
    axes[0].set_title("reward")
    axes[1].plot(*history(client, rlhf_run_id, "rl/kl"), color="tab:red", label="sampled estimate (rl/kl)")
    exact = history(client, rlhf_run_id, "rl/kl_exact")
    if exact[0]:  # runs before the metric existed have none
        axes[1].plot(*exact, color="tab:green", label="exact over the states passed (rl/kl_exact)")
        axes[1].legend(fontsize=8)
    axes[1].set_title("KL to the reference (per response)")
    axes[2].plot(*history(client, rlhf_run_id, "eval/rate_114514"), "o-", color="tab:purple")
    axes[2].set_title("114514 rate (well-formed, wrong)")
    for key, label in (
        ("rl/zero_advantage_groups", "groups with no advantage"),
        ("rl/rare_action_rate", "actions rare in pretraining"),
        ("reward/rm_agreement", "pairs the RM ranks as gold does"),
    ):
        steps, values = history(client, rlhf_run_id, key)
        if steps:  # runs before the metric existed have none
            axes[3].plot(steps, values, label=label)
    axes[3].set_title("where the signal is, and how right (shares)")
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def per_template(before: dict[str, float], after: dict[str, float], out: Path) -> Path:
    names = sorted(k.removeprefix("eval/pass/") for k in before if k.startswith("eval/pass/"))
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.5), 4.5))
    ax.bar([i - 0.2 for i in x], [before.get(f"eval/pass/{n}", 0) for n in names], 0.4, label="after SFT")
    ax.bar([i + 0.2 for i in x], [after.get(f"eval/pass/{n}", 0) for n in names], 0.4, label="after RLHF")
    ax.set_xticks(list(x), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("gold pass rate (greedy, held-out)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def best_of_curve(curve: BestOf, out: Path) -> Path:
    """`tokenmdp best-of --plot`: gold and the RM's score against KL, best-of-k beside the RLHF policy."""
    kl = [p.kl_bound for p in curve.points]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(kl, [p.rm_pick for p in curve.points], "o-", label="best-of-k, the RM's pick")
    axes[0].plot(kl, [p.gold_pick for p in curve.points], "s--", label="best-of-k, the grader's pick (pass@k)")
    axes[1].plot(kl, [p.rm_score for p in curve.points], "o-", label="best-of-k, the RM's pick")
    for p in curve.points:
        axes[0].annotate(f"k={p.k}", (p.kl_bound, p.rm_pick), textcoords="offset points", xytext=(4, -12), fontsize=8)
        axes[1].annotate(f"k={p.k}", (p.kl_bound, p.rm_score), textcoords="offset points", xytext=(4, -12), fontsize=8)
    if (rl := curve.rlhf) is not None:
        label = f"RLHF, one draw (iteration {rl['iteration']:.0f})"
        axes[0].plot([rl["kl"]], [rl["drawn"]], "*", markersize=14, color="tab:red", label=label)
        axes[1].plot([rl["kl"]], [rl["rm_score"]], "*", markersize=14, color="tab:red", label=label)
    axes[0].set_ylabel(f"gold pass rate of a draw ({curve.questions} held-out questions)")
    axes[1].set_ylabel("the RM's score")
    for ax in axes:
        ax.set_xlabel("KL from the SFT policy, nats a response (best-of-k: at most log k - (k-1)/k)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"best-of-k of the {curve.stage} policy's {curve.draws} draws per question", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
