"""The three views of `tokenmdp rollouts`, each as tables or one JSON object: the kept groups, the RM's misordered
pairs, where the KL came from."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.common import clear_refusals

if TYPE_CHECKING:
    from pipelines.rollouts import Agreement, LoggedRLHF


def show_kl_sources(run_dir: Path, iteration: int | None, as_json: bool) -> None:
    """`rollouts --kl`: the responses that carried the most KL at the iteration, action by action."""
    from pipelines import rollouts as view

    with clear_refusals():
        sources = view.kl_sources(view.logged_rlhf(run_dir), iteration)
    if as_json:
        typer.echo(json.dumps(asdict(sources)))
        return
    from cli.report import print_kl_sources

    print_kl_sources(run_dir, sources)


def show_misordered(run_dir: Path, iteration: int | None, limit: int, pairs: Path | None, as_json: bool) -> None:
    """`rollouts --misordered`: the pairs of answers the RM ranked against the grader (at `iteration`, else all),
    and with `pairs` all of them written as a `reward.extra_pairs` file in the grader's order."""
    from pipelines import rollouts as view

    with clear_refusals():
        run = view.logged_rlhf(run_dir)
        agreed = view.agreement(run)
        found, every_group = view.misordered_pairs(run)
        found = [m for m in found if iteration in (None, m.iteration)]
        if pairs is not None:
            written = view.pairs_file_lines(found)
            pairs.write_text("".join(f"{line}\n" for line in written))
            typer.echo(f"{pairs}: {len(written)} pairs (--set reward.extra_pairs={pairs} adds them)", err=True)
    if as_json:
        out = rlhf_json(run, agreed) | {
            "misordered": [asdict(m) for m in found[:limit]], "misordered_total": len(found),
            "every_group": every_group, "by_template": dict(view.by_template(found)),
        }  # fmt: skip
        typer.echo(json.dumps(out))
        return
    from cli.report import print_misordered

    print_misordered(run_dir, found, every_group, limit, agreed, view.by_template(found))


def show_rollouts(run_dir: Path, iteration: int | None, as_json: bool) -> None:
    """`rollouts`: the kept groups of the iteration (else the last), with the RM that scored them and, under
    dynamic sampling, the rounds drawn."""
    from pipelines import rollouts as view

    with clear_refusals():
        run = view.logged_rlhf(run_dir)
        agreed = view.agreement(run)
        rows = view.table_rows(run)
        shown, picked = view.iteration_rows(rows, iteration)
        refreshes, drawn = view.scoring_rm(run, shown), view.drawn_rounds(run, shown)
    if as_json:
        iterations = sorted({r["iteration"] for r in rows})
        out = rlhf_json(run, agreed) | {
            "rows": len(rows), "iterations": iterations, "iteration": shown, "rollouts": picked,
            "rm_version": refreshes, "sample_rounds": drawn[0] if drawn else None,
            "signal_groups": drawn[1] if drawn else None,
        }  # fmt: skip
        typer.echo(json.dumps(out))
        return
    from cli.report import print_rollouts

    print_rollouts(run_dir, rows, shown, picked, agreed, refreshes, drawn)


def rlhf_json(run: LoggedRLHF, agreed: Agreement | None) -> dict:
    """What every `rollouts --json` opens with: the run's reward source and the RM's agreement with the grader."""
    return {"reward_source": run.reward_source, "rm_agreement": asdict(agreed) if agreed else None}
