"""`tokenmdp`: the command line. Heavy imports stay inside commands so `--help` is instant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from conf.presets import preset_names

if TYPE_CHECKING:
    from conf.schema import Config

app = typer.Typer(help="TokenMDP: RLHF that treats a GPT as a policy over a token-level MDP.", no_args_is_help=True)
world_app = typer.Typer(help="The sequence world: corpus, exam bank, action space.", no_args_is_help=True)

POLICY_SOURCE = "A run directory (e.g. runs/demo), a registered model (models:/<name>/<version>) or a checkpoint."


def _print_version(asked: bool) -> None:
    """tokenmdp's version and those of what it runs on, one line each: what a bug report needs."""
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    for package in ("tokenmdp", "torch", "ray", "mlflow", "pydantic"):
        try:
            typer.echo(f"{package} {version(package)}")
        except PackageNotFoundError:
            typer.echo(f"{package} (not installed)")
    raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the versions and exit.")
    ] = False,
) -> None:
    """TokenMDP: RLHF that treats a GPT as a policy over a token-level MDP."""


app.add_typer(world_app, name="world")

ConfigArg = Annotated[str, typer.Argument(help=f"A preset ({', '.join(preset_names())}) or a YAML path.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set world.seed=3")]


def _parse_terms(text: str, what: str = "sequence") -> list[int]:
    from world.user_data import parse_terms

    try:
        return parse_terms(text, what)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@app.command()
def grade(
    sequence: Annotated[str, typer.Argument(help="The prefix, e.g. 1,2,4,8,16")],
    answer: Annotated[str | None, typer.Option(help="Grade this continuation, e.g. 32 or 32,64")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Ask the gold grader for the exam's answer to a number series."""
    from world.grader import analyze
    from world.grader import grade as grade_fn

    prefix = _parse_terms(sequence)
    verdict = analyze(prefix)
    result = verdict.to_dict()
    result["answer"] = result["answer"][:1] if result["answer"] else None
    if answer is not None:
        result["grade"] = grade_fn(prefix, _parse_terms(answer, "answer"))
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

    cfg, _ = _setup(config, overrides, None)
    with _clear_refusals():
        print_world_stats(cfg.world, documents)


OutOpt = Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/<config name>).")]
RayOpt = Annotated[
    str | None, typer.Option("--ray-address", help="Join this Ray cluster (default: RAY_ADDRESS, else a local Ray).")
]


def _use_ray(address: str | None) -> None:
    import os

    if address:
        os.environ["RAY_ADDRESS"] = address


def _setup(config: str, overrides: list[str] | None, out: Path | None):
    from conf.load import ConfigError, load_config

    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as err:
        raise typer.BadParameter(str(err)) from None
    return cfg, out or Path("runs") / cfg.name


@contextmanager
def _writing_stage(config: str, overrides: list[str] | None, out: Path | None) -> Iterator[tuple[Config, Path]]:
    """The config and run directory of a command that trains a stage, held for the command's length: no other
    command writes into the directory meanwhile, and no stage trained under another config may be in it."""
    from pipelines.run_config import ConfigChanged, guard_run_dir

    cfg, run_dir = _setup(config, overrides, out)
    with _sole_writer(run_dir), _clear_refusals():
        try:
            guard_run_dir(run_dir, cfg.model_dump())
        except ConfigChanged as err:
            raise typer.BadParameter(str(err), param_hint="--out") from None
        yield cfg, run_dir


@contextmanager
def _sole_writer(run_dir: Path) -> Iterator[None]:
    """`pipelines.run_lock.sole_writer`, a second writer refused as a usage error."""
    from pipelines.run_lock import RunDirBusy, sole_writer

    try:
        with sole_writer(run_dir):
            yield
    except RunDirBusy as err:
        raise typer.BadParameter(str(err), param_hint="--out") from None
    except KeyboardInterrupt:  # Ctrl-C: say what is kept, rather than end without a word
        typer.echo(f"interrupted{_kept(run_dir)}; the same command resumes from there", err=True)
        raise typer.Exit(130) from None


def _kept(run_dir: Path) -> str:
    from pipelines.status import NotARun, run_status

    try:
        return f" at {run_status(run_dir).position()}"
    except NotARun:  # an experiment's directory: its arms are runs of their own
        return ""


@contextmanager
def _clear_refusals() -> Iterator[None]:
    """What a user can fix, said in a few lines instead of a traceback: a stage run before the one it starts
    from (which command to run), a run directory without what a reading command needs, a data file with
    bad lines (every one, by number), a tracking server that does not answer, actors this Ray can never start."""
    from actors.cluster import ActorsLost, DoesNotFit
    from pipelines.run_config import MissingStage, RunDirError
    from pipelines.tracking import TrackingUnreachable
    from world.user_data import DataFileError

    try:
        yield
    except MissingStage as err:
        raise typer.BadParameter(str(err), param_hint="--out") from None
    except RunDirError as err:  # a reading command (trace, compare, exam) asked what the run cannot give
        raise typer.BadParameter(str(err)) from None
    except DataFileError as err:
        typer.echo(f"Error: {err}", err=True)  # one bad line a line: nothing was trained on it
        raise typer.Exit(2) from None
    except DoesNotFit as err:  # actors Ray would wait for forever
        raise typer.BadParameter(str(err)) from None
    except (TrackingUnreachable, ActorsLost) as err:  # nothing trained is lost: the same command resumes
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from None


@app.command()
def pretrain(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None) -> None:
    """Pretrain the policy on the sequence corpus (resumes from its last checkpoint)."""
    from pipelines import pretrain as stage

    with _writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir)))


@app.command()
def sft(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None) -> None:
    """Supervised fine-tuning on exam questions, after the action-space audit."""
    from pipelines import sft as stage

    with _writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir)))


@app.command()
def preferences(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None) -> None:
    """Sample on-policy responses from the SFT policy and label pairs within each prompt."""
    from pipelines import preferences as stage

    with _writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir).counts))


@app.command()
def reward(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None) -> None:
    """Train the reward model (Bradley-Terry on within-prompt pairs) and judge it against gold."""
    from pipelines import reward as stage

    with _writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir)))


@app.command("reward-curve")
def reward_curve(
    config: ConfigArg = "demo",
    overrides: SetOpt = None,
    out: OutOpt = None,
    sizes: Annotated[str, typer.Option(help="Comma-separated numbers of training pairs.")] = "250,500,1000,2000",
) -> None:
    """How the reward model's held-out accuracy grows with the number of preference pairs."""
    from cli.report import print_rows
    from pipelines import reward as stage
    from pipelines.run_config import ConfigChanged, require_trained_as

    cfg, run_dir = _setup(config, overrides, out)
    try:  # it reads (or collects) the preferences; its reward models are thrown away: their settings may differ
        require_trained_as(run_dir, cfg.model_dump(), through="preferences")
    except ConfigChanged as err:
        raise typer.BadParameter(str(err), param_hint="--out") from None
    with _sole_writer(run_dir), _clear_refusals():
        points = stage.learning_curve(cfg, run_dir, [int(s) for s in sizes.split(",")])
    columns = ["pairs", "rm/gold_accuracy", "rm/gold_accuracy_stderr", "rm/gold_accuracy_correctness",
               "rm/label_accuracy", "rm/cross_prompt_accuracy"]  # fmt: skip
    print_rows("reward model learning curve", points, columns)
    typer.echo(json.dumps(points))


@app.command()
def rlhf(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None, ray_address: RayOpt = None) -> None:
    """On-policy RLHF on Ray actors from the SFT policy and the reward model (resumes from its checkpoint)."""
    from pipelines import rlhf as stage

    _use_ray(ray_address)
    with _writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir)))


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
) -> None:
    """Judge a policy on held-out exam questions with the gold grader."""
    from conf.load import ConfigError, with_overrides
    from pipelines import evaluate as stage
    from pipelines.policy_source import final_policy
    from pipelines.run_config import RunDirError, trained_checkpoint

    with _clear_refusals():
        if checkpoint is None:
            cfg, run_dir = _setup(config or "demo", overrides, out)
            policy = trained_checkpoint(run_dir, "sft", needed_by="evaluate without --checkpoint")
        else:
            try:
                chosen = final_policy(checkpoint)
            except RunDirError as err:
                raise typer.BadParameter(str(err), param_hint="--checkpoint") from None
            try:  # the questions held out from the policy's own training, unless a config is named
                cfg = _setup(config, overrides, None)[0] if config else with_overrides(chosen.cfg, overrides or [])
            except ConfigError as err:
                raise typer.BadParameter(str(err)) from None
            policy = chosen.checkpoint
    typer.echo(json.dumps(stage.main(cfg, policy, samples)))


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="models:/<name>/<version>, a run directory or a checkpoint file.")],
    config: ConfigArg = "demo",
    overrides: SetOpt = None,
    host: Annotated[str | None, typer.Option(help="Default: serve.host of the config.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Default: serve.port of the config.")] = None,
    ray_address: RayOpt = None,
) -> None:
    """Serve a policy over HTTP with Ray Serve until interrupted (POST /v1/continue, /v1/completions)."""
    from serve.launch import CannotListen, start

    _use_ray(ray_address)
    cfg, _ = _setup(config, overrides, None)
    settings = cfg.serve.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    try:
        with _clear_refusals():
            url = start(model, settings)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err), param_hint="--model") from None
    except CannotListen as err:
        raise typer.BadParameter(str(err), param_hint="--port") from None
    typer.echo(f"serving {model} at {url} (docs: {url}/docs); Ctrl-C stops")
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve as ray_serve

        ray_serve.shutdown()


@app.command()
def run(
    config: ConfigArg = "demo",
    overrides: SetOpt = None,
    out: OutOpt = None,
    ray_address: RayOpt = None,
    from_run: Annotated[
        Path | None,
        typer.Option(
            "--from", help="Reuse the stages this run directory trained as this config would (e.g. runs/demo)."
        ),
    ] = None,
) -> None:
    """The whole pipeline: pretrain -> SFT -> preferences -> reward model -> RLHF -> registry and report."""
    from pipelines.fork import ForkError
    from pipelines.run_config import ConfigChanged
    from pipelines.workflow import main as workflow

    _use_ray(ray_address)
    cfg, run_dir = _setup(config, overrides, out)
    try:
        with _sole_writer(run_dir), _clear_refusals():
            workflow(cfg, run_dir, from_run=from_run)
    except ConfigChanged as err:
        raise typer.BadParameter(str(err), param_hint="--out") from None
    except ForkError as err:
        raise typer.BadParameter(str(err), param_hint="--from") from None


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help=POLICY_SOURCE)],
    b: Annotated[str, typer.Argument(help="Another, asked the same held-out questions (e.g. a fork of it).")],
    stage: Annotated[str, typer.Option(help="Whose policies to judge in a run directory: sft or rlhf.")] = "rlhf",
) -> None:
    """Two runs or policies side by side, judged question by question on the same held-out exam."""
    from cli.report import print_rows
    from pipelines.compare import paired, settings_that_differ, side_by_side, summary_of
    from pipelines.policy_source import policy_from

    with _clear_refusals():
        first, second = policy_from(a, stage), policy_from(b, stage)
        judged = paired(first, second)
    changed = settings_that_differ(first.cfg, second.cfg)
    print_rows(f"settings: a = {a}, b = {b} ({len(changed)} differ)", changed, ["setting", "a", "b"])
    summaries = summary_of(first), summary_of(second)
    if None not in summaries:
        print_rows(f"a = {a}, b = {b}", side_by_side(*summaries), ["stage", "metric", "a", "b", "b - a"])
    judged_what = f"{stage} policies" if first.run_dir and second.run_dir else "the policies"
    print_rows(f"{judged_what} on the same held-out questions (paired)", [judged], list(judged))
    settings = {row["setting"]: [row["a"], row["b"]] for row in changed}
    judged_stage = stage if first.run_dir or second.run_dir else None  # a registered model is one policy
    typer.echo(json.dumps({"stage": judged_stage, **judged, "settings": settings}))


@app.command()
def trace(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (e.g. runs/demo).")],
    sequence: Annotated[str, typer.Argument(help="The prompt's terms, e.g. 1,2,4,8,16")],
    stage: Annotated[str, typer.Option(help="Whose policy: rlhf (the final one) or sft.")] = "rlhf",
    group: Annotated[
        int | None, typer.Option(min=0, help="Samples scored as an RL group (default: the run's rl.group_size).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the group's samples.")] = 0,
    answer: Annotated[
        str | None, typer.Option(help="Trace this answer (e.g. 8), teacher-forced, instead of the greedy one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """One prompt through the token-level MDP: each action's probability, the reference's, the KL, the reward."""
    from pipelines.trace import trace as run_trace

    with _clear_refusals():
        traced = run_trace(
            run_dir, _parse_terms(sequence), stage, group, seed, _parse_terms(answer, "answer") if answer else None
        )
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

    with _clear_refusals():
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

        with _clear_refusals():
            try:
                cfg = with_overrides(load_run_config(Path(config)), overrides or [])
            except ConfigError as err:
                raise typer.BadParameter(str(err)) from None
    else:
        cfg, _ = _setup(config, overrides, None)
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


EXPERIMENT_NAMES = ("staleness", "action-space", "rm-pairs", "contrastive", "overoptimisation")


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
    from cli.report import print_runs

    print_runs(lines, root)


@app.command()
def experiment(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(EXPERIMENT_NAMES)}.")],
    config: ConfigArg = "demo",
    overrides: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Experiment directory (default: runs/experiments/<config>/<name>).")
    ] = None,
    base_run: Annotated[
        Path | None, typer.Option("--base-run", help="Reuse the shared stages of this finished run (e.g. runs/demo).")
    ] = None,
    ray_address: RayOpt = None,
) -> None:
    """A controlled comparison: arms that change one setting, same seeds, one MLflow parent run, a table and a plot."""
    if name not in EXPERIMENT_NAMES:
        raise typer.BadParameter(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENT_NAMES)}")
    from experiments import registry
    from experiments.runner import run as run_experiment
    from pipelines.run_config import ConfigChanged

    _use_ray(ray_address)
    cfg, _ = _setup(config, overrides, None)
    out = out or Path("runs") / "experiments" / cfg.name / name
    try:
        with _sole_writer(out), _clear_refusals():
            run_experiment(registry()[name], cfg, out, base_run=base_run)
    except (ConfigChanged, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None


if __name__ == "__main__":
    app()
