"""The commands that read: the grader, the world, a policy judged, runs compared, traced, examined, listed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    POLICY_SOURCE,
    ConfigArg,
    OutOpt,
    SetOpt,
    app,
    clear_refusals,
    config_and_dir,
    terms_arg,
    world_app,
)  # fmt: skip
from conf.presets import preset_names
from conf.schema import Precision


@app.command()
def grade(
    sequence: Annotated[str, typer.Argument(help="The prefix, e.g. 1,2,4,8,16")],
    answer: Annotated[str | None, typer.Option(help="Grade this continuation, e.g. 32 or 32,64")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Ask the gold grader for the exam's answer to a number series."""
    from world.grader import analyze
    from world.grader import grade as grade_fn

    prefix = terms_arg(sequence)
    verdict = analyze(prefix)
    result = verdict.to_dict()
    result["answer"] = result["answer"][:1] if result["answer"] else None
    if answer is not None:
        result["grade"] = grade_fn(prefix, terms_arg(answer, "answer"))
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"status: {verdict.status}")
    typer.echo(f"answer: {result['answer'][0] if result['answer'] else '-'}")
    typer.echo(f"rule:   {verdict.rule or '-'}")
    for alt in result["alternatives"]:
        typer.echo(f"  also: {alt['rule']} -> {alt['answer'][0]}")
    if answer is not None:
        typer.echo(f"grade:  {result['grade']}")


@world_app.command("stats")
def world_stats(config: ConfigArg = "demo", overrides: SetOpt = None, documents: int = 2000) -> None:
    """Corpus and exam-bank statistics for a config."""
    from cli.report import print_world_stats

    cfg, _ = config_and_dir(config, overrides, None)
    with clear_refusals():
        print_world_stats(cfg.world, documents)


@app.command()
def evaluate(
    config: Annotated[
        str | None,
        typer.Argument(
            help=f"A preset ({', '.join(preset_names())}) or a YAML path: whose held-out questions. Default: the "
            "config the --checkpoint policy was trained under, else demo."
        ),
    ] = None,
    overrides: SetOpt = None,
    out: OutOpt = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            help="The policy: a checkpoint file, a run directory (its RLHF, else SFT, policy) or a registered "
            "model, models:/<name>/<version>. Default: <run dir>/sft/checkpoint.pt"
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option(min=1, help="Answers per question at temperature 1: > 1 adds pass@1..n and maj@n.")
    ] = 1,
    precision: Annotated[
        Precision,
        typer.Option(help="The weights' and KV cache's dtype while it answers: bfloat16 judges it as "
                     "`serve.precision: bfloat16` serves it."),
    ] = "float32",
) -> None:  # fmt: skip
    """Judge a policy on held-out exam questions with the gold grader."""

    from conf.load import ConfigError, with_overrides
    from pipelines import evaluate as stage
    from pipelines.policy_source import final_policy
    from pipelines.run_config import RunDirError, trained_checkpoint

    with clear_refusals():
        if checkpoint is None:
            cfg, run_dir = config_and_dir(config or "demo", overrides, out)
            policy = trained_checkpoint(run_dir, "sft", needed_by="evaluate without --checkpoint")
            judged = stage.main(cfg, policy, samples, precision)
        else:
            try:
                chosen = final_policy(checkpoint)
            except RunDirError as err:
                raise typer.BadParameter(str(err), param_hint="--checkpoint") from None
            if config:
                cfg = config_and_dir(config, overrides, None)[0]
            else:  # the questions held out from the policy's own training
                try:
                    cfg = with_overrides(chosen.cfg, overrides or [])
                except ConfigError as err:
                    raise typer.BadParameter(str(err)) from None
            model = chosen.model.in_precision(precision)
            judged = stage.judged(model, chosen.space, cfg, samples, chosen.name) | {"precision": precision}
    typer.echo(json.dumps(judged))


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help=POLICY_SOURCE)],
    b: Annotated[str, typer.Argument(help="Another, asked the same held-out questions (e.g. a fork of it).")],
    stage: Annotated[str, typer.Option(help="Whose policies to judge in a run directory: sft or rlhf.")] = "rlhf",
) -> None:
    """Two runs or policies side by side, judged question by question on the same held-out exam."""
    from cli.report import print_rows
    from pipelines.compare import paired, seed_only, settings_that_differ, side_by_side, summary_of
    from pipelines.policy_source import policy_from

    with clear_refusals():
        first, second = policy_from(a, stage), policy_from(b, stage)
        judged = paired(first, second)
    changed = settings_that_differ(first.cfg, second.cfg)
    print_rows(f"settings: a = {a}, b = {b} ({len(changed)} differ)", changed, ["setting", "a", "b"])
    summaries = summary_of(first), summary_of(second)
    if None not in summaries:
        print_rows(f"a = {a}, b = {b}", side_by_side(*summaries), ["stage", "metric", "a", "b", "b - a"])
    judged_what = f"{stage} policies" if first.run_dir and second.run_dir else "the policies"
    print_rows(f"{judged_what} on the same held-out questions (paired)", [judged], list(judged))
    noise = seed_only(changed)
    if noise:
        typer.echo(
            "a and b train differently only by their seed: read the difference as the seed's noise, not an effect "
            "(on the demo the RL seed alone moves RLHF's held-out rate by a standard deviation of 1.3 points, the "
            "run's seed by 3.3: docs/EXPERIMENTS.md sections 8 and 8b); `tokenmdp experiment NAME --seeds N` "
            "measures an effect over seeds"
        )
    settings = {row["setting"]: [row["a"], row["b"]] for row in changed}
    judged_stage = stage if first.run_dir or second.run_dir else None  # a registered model is one policy
    typer.echo(json.dumps({"stage": judged_stage, **judged, "settings": settings, "seed_only": noise}))


@app.command()
def trace(
    source: Annotated[
        str,
        typer.Argument(
            help="A run directory (e.g. runs/demo), or a checkpoint file or registered model (models:/name/version) "
            "whose run is on this machine."
        ),
    ],
    sequence: Annotated[str, typer.Argument(help="The prompt's terms, e.g. 1,2,4,8,16")],
    stage: Annotated[str, typer.Option(help="Whose policy: rlhf (the final one) or sft.")] = "rlhf",
    group: Annotated[
        int | None, typer.Option(min=0, help="Samples scored as an RL group (default: the run's rl.group_size).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the group's samples.")] = 0,
    answer: Annotated[
        str | None, typer.Option(help="Trace this answer (e.g. 8), teacher-forced, instead of the greedy one.")
    ] = None,
    iteration: Annotated[
        int | None, typer.Option(min=1, help="Trace the RLHF policy kept at this iteration (rl.snapshot_every).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """One prompt through the token-level MDP: each action's probability, the reference's, the KL, the reward."""
    from pipelines.trace import trace as run_trace

    given = terms_arg(answer, "answer") if answer else None
    with clear_refusals():
        traced = run_trace(source, terms_arg(sequence), stage, group, seed, given, iteration)
    if as_json:
        typer.echo(traced.to_json())
        return
    from cli.report import print_trace

    print_trace(traced)


@app.command()
def exam(
    source: Annotated[str, typer.Argument(help=POLICY_SOURCE)],
    questions: Annotated[
        Path, typer.Argument(help="Your exam: a question a line, e.g. '1 2 4 8 16' or '1, 3, 5, 7 -> 9' (your key).")
    ],
    stage: Annotated[
        list[str] | None, typer.Option(help="Whose policy: sft, rlhf (repeat for both; default: each the run holds).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Your own questions posed to a run's policies, audited first, graded by your key or the gold grader."""
    from pipelines.exam import exam_policies, pose_exam
    from world.user_data import read_exam

    with clear_refusals():
        result = pose_exam(exam_policies(source, stage), read_exam(questions), source=str(questions))
    if as_json:
        typer.echo(result.to_json())
        return
    from cli.report import print_exam

    print_exam(result)


@app.command("config")
def show_config(
    config: Annotated[
        str, typer.Argument(help=f"A preset ({', '.join(preset_names())}), a YAML path or a run directory.")
    ] = "demo",
    overrides: SetOpt = None,
    docs: Annotated[
        bool, typer.Option("--docs", help="A table instead: each setting's value, default and what it does.")
    ] = False,
    changed: Annotated[
        bool, typer.Option("--changed", help="The table's settings that differ from an empty config's only.")
    ] = False,
) -> None:
    """A resolved config as YAML (save it, edit it, run it), or with --docs every setting explained."""
    from conf.describe import settings, to_yaml

    if Path(config).is_dir():
        from conf.load import ConfigError, with_overrides
        from pipelines.run_config import load_run_config

        with clear_refusals():
            try:
                cfg = with_overrides(load_run_config(Path(config)), overrides or [])
            except ConfigError as err:
                raise typer.BadParameter(str(err)) from None
    else:
        cfg, _ = config_and_dir(config, overrides, None)
    if not (docs or changed):
        typer.echo(to_yaml(cfg), nl=False)
        return
    from cli.report import print_settings

    print_settings([s for s in settings(cfg) if s.changed or not changed], f"{config}: {cfg.name}")


@app.command()
def status(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (e.g. runs/demo).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Where a run stands: each stage's progress, whether a command is writing it now, where a re-run resumes."""
    from pipelines.status import NotARun, run_status

    try:
        found = run_status(run_dir)
    except NotARun as err:
        raise typer.BadParameter(str(err)) from None
    if as_json:
        typer.echo(json.dumps(found.to_dict()))
        return
    from cli.report import print_status

    print_status(found)


@app.command()
def runs(
    root: Annotated[
        Path, typer.Argument(help="A folder of run directories (searched below, forks and arms too).")
    ] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of a table.")] = False,
) -> None:
    """Every run under a folder, a line each: where it stands, its SFT, RM and RLHF scores, its registered model."""
    from pipelines.runs import run_lines, to_json

    if not root.is_dir():
        raise typer.BadParameter(f"{root} is not a folder", param_hint="ROOT")
    lines = run_lines(root)
    if as_json:
        typer.echo(to_json(lines))
        return
    if not lines:  # a table of headers alone reads as a failure to list, not as a folder without runs
        typer.echo(f"no run directory under {root} (a run is a folder with a config.json: `tokenmdp run` makes one)")
        return
    from cli.report import print_runs

    print_runs(lines, root)


@app.command()
def rollouts(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose RLHF has logged (e.g. runs/demo).")],
    iteration: Annotated[
        int | None, typer.Option(min=1, help="The iteration shown (default: the last; with --misordered: all).")
    ] = None,
    misordered: Annotated[
        bool, typer.Option("--misordered", help="The pairs of answers the RM ranked against the grader instead.")
    ] = False,
    kl: Annotated[
        bool,
        typer.Option("--kl", help="The responses that carried the most KL at the iteration instead, action by action."),
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="With --misordered: the newest this many pairs.")] = 20,
    pairs: Annotated[
        Path | None,
        typer.Option(help="With --misordered: write them all as a reward.extra_pairs file, in the grader's order."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """What RLHF trained on, from its MLflow run: kept groups, the RM's misorders, where the KL came from.

    Each kept group's responses with their reward, gold verdict, advantage and KL."""
    if pairs is not None and not misordered:
        raise typer.BadParameter("--pairs writes the misordered pairs: add --misordered", param_hint="--pairs")
    if kl and misordered:
        raise typer.BadParameter("--kl and --misordered show different tables: ask for one", param_hint="--kl")
    from cli import rollouts_views as views

    if kl:
        views.show_kl_sources(run_dir, iteration, as_json)
    elif misordered:
        views.show_misordered(run_dir, iteration, limit, pairs, as_json)
    else:
        views.show_rollouts(run_dir, iteration, as_json)


@app.command()
def curve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose RLHF kept snapshots (rl.snapshot_every).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of a table.")] = False,
) -> None:
    """RLHF's policies along the way (SFT, each snapshot, the last) on the held-out exam and the practised prompts."""
    from pipelines.curve import rl_curve, to_json

    with clear_refusals():
        points = rl_curve(run_dir)
    if as_json:
        typer.echo(to_json(points))
        return
    from cli.report import print_curve

    print_curve(points, run_dir)


@app.command("best-of")
def best_of(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with an SFT policy and a reward model.")],
    n: Annotated[
        int, typer.Option(min=1, max=256, help="Answers drawn per held-out question; best-of-k for k = 1, 2, 4, .., n.")
    ] = 16,
    stage: Annotated[str, typer.Option(help="Whose answers: sft (where RL starts) or rlhf.")] = "sft",
    seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the curve, gold and the RM's score against KL, into this PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Best-of-k with the run's RM on the held-out exam: what a perfect optimiser of the RM reaches, at what KL,
    beside the grader's own pick and the run's RLHF policy."""
    from pipelines.best_of import best_of as run_best_of

    with clear_refusals():
        curve = run_best_of(run_dir, n, stage, seed)
    if plot is not None:
        from pipelines.report import best_of_curve

        best_of_curve(curve, plot)
    if as_json:
        typer.echo(curve.to_json())
        return
    from cli.report import print_best_of

    print_best_of(curve, run_dir)
