"""Over-optimisation: proxy (RM) and gold reward against KL from the reference.

Two arms differ only in the KL coefficient: the demo's and a weak one. With the weak
penalty the policy travels further from the SFT reference; the RM's proxy reward keeps
rising while the gold reward (the grader on the same training samples) peaks and turns
down: Goodhart on a learnt reward. The peak is found on a moving average, as RLHF's own
over-optimisation watch finds it while it trains (`algos/overoptimisation.py`); beside it, how often the RM
ranked the policy's own answers as the grader did in the first and the last quarter of each arm.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from algos.overoptimisation import moving_average, turning_point
from experiments.rl_arms import rl_experiment, summary_row
from experiments.runner import Arm, ArmResult, metric_history
from pipelines.rl_metrics import rm_agreement_over
from pipelines.tracking import logged_run_id

WEAK_KL = 0.01
WINDOW = 5


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    rows = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for r in results:
        rl_dir = r.run_dir / "rlhf"
        steps, kl = metric_history(client, rl_dir, "rl/kl")
        _, gold = metric_history(client, rl_dir, "reward/gold")
        _, proxy = metric_history(client, rl_dir, "reward/proxy")
        turn = turning_point(gold, proxy, WINDOW)
        agreement = rm_agreement_over(client, logged_run_id(rl_dir))  # the RM's ranking on the policy's own answers
        rows.append(summary_row(r) | {
            "iteration of gold peak": steps[turn.peak], "KL at gold peak": kl[turn.peak],
            "gold at peak": turn.gold_at_peak, "gold at end": turn.gold_now, "proxy rise after peak": turn.proxy_rise,
            "RM agrees, first quarter": agreement["rm_agreement_start"],
            "RM agrees, last quarter": agreement["rm_agreement_end"],
        })  # fmt: skip
        smooth_kl, smooth_gold, smooth_proxy = (moving_average(v, WINDOW) for v in (kl, gold, proxy))
        axes[0].plot(smooth_kl, smooth_gold, label=f"{r.arm.name}: gold")
        axes[0].plot(smooth_kl, smooth_proxy, "--", label=f"{r.arm.name}: proxy (RM)")
        axes[1].plot(steps, smooth_gold, label=f"{r.arm.name}: gold")
        axes[1].plot(steps, smooth_proxy, "--", label=f"{r.arm.name}: proxy (RM)")
    axes[0].set_xlabel("KL to the reference (nats per response)")
    axes[1].set_xlabel("iteration")
    for ax in axes:
        ax.set_ylabel(f"reward ({WINDOW}-iteration moving average)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    plot = out / "overoptimisation.png"
    fig.savefig(plot, dpi=100)
    plt.close(fig)
    return rows, plot


EXPERIMENT = rl_experiment(
    name="overoptimisation",
    question="where does the gold reward turn down while the RM's proxy reward still rises?",
    changes=("rl.kl_coef",),
    arms=(Arm("kl-config"), Arm(f"kl-{WEAK_KL}", (f"rl.kl_coef={WEAK_KL}",))),
    report=report,
)
