"""The commands that train: each stage, the whole pipeline, an experiment; and serving and registering the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    POLICY_SOURCE,
    ConfigArg,
    OutOpt,
    RayOpt,
    SetOpt,
    StageOpt,
    app,
    check_stage,
    clear_refusals,
    config_and_dir,
    single_writer,
    use_ray,
    writing_stage,
)  # fmt: skip
from conf.schema import Precision


@app.command()
def pretrain(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None) -> None:
    """Pretrain the policy on the sequence corpus (resumes from its last checkpoint)."""
    from pipelines import pretrain as stage

    with writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir)))


@app.command()
def sft(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None) -> None:
    """Supervised fine-tuning on exam questions, after the action-space audit."""
    from pipelines import sft as stage

    with writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir)))


@app.command()
def preferences(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None) -> None:
    """Sample on-policy responses from the SFT policy and label pairs within each prompt."""
    from pipelines import preferences as stage

    with writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir).counts))


@app.command()
def reward(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None) -> None:
    """Train the reward model (Bradley-Terry on within-prompt pairs) and judge it against gold."""
    from pipelines import reward as stage

    with writing_stage(config, overrides, out) as (cfg, run_dir):
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

    cfg, run_dir = config_and_dir(config, overrides, out)
    try:  # it reads (or collects) the preferences; its reward models are thrown away: their settings may differ
        require_trained_as(run_dir, cfg.model_dump(), through="preferences")
    except ConfigChanged as err:
        raise typer.BadParameter(str(err), param_hint="--out") from None
    with single_writer(run_dir), clear_refusals():
        points = stage.learning_curve(cfg, run_dir, [int(s) for s in sizes.split(",")])
    columns = ["pairs", "rm/gold_accuracy", "rm/gold_accuracy_stderr", "rm/gold_accuracy_correctness",
               "rm/label_accuracy", "rm/cross_prompt_accuracy"]  # fmt: skip
    print_rows("reward model learning curve", points, columns)
    typer.echo(json.dumps(points))


@app.command()
def rlhf(config: ConfigArg = "demo", overrides: SetOpt = None, out: OutOpt = None, ray_address: RayOpt = None) -> None:
    """On-policy RLHF on Ray actors from the SFT policy and the reward model (resumes from its checkpoint)."""
    from pipelines import rlhf as stage

    use_ray(ray_address)
    with writing_stage(config, overrides, out) as (cfg, run_dir):
        typer.echo(json.dumps(stage.main(cfg, run_dir)))


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

    use_ray(ray_address)
    cfg, run_dir = config_and_dir(config, overrides, out)
    try:
        with single_writer(run_dir), clear_refusals():
            workflow(cfg, run_dir, from_run=from_run)
    except ConfigChanged as err:
        raise typer.BadParameter(str(err), param_hint="--out") from None
    except ForkError as err:
        raise typer.BadParameter(str(err), param_hint="--from") from None


EXPERIMENT_NAMES = (
    "staleness", "action-space", "rm-pairs", "contrastive", "overoptimisation", "zero-advantage", "kl-estimator",
    "seeds", "sampler-precision",
)  # fmt: skip


@app.command()
def experiment(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(EXPERIMENT_NAMES)}; or sweep, arms of your own.")],
    config: ConfigArg = "demo",
    overrides: SetOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Experiment directory (default: runs/experiments/<config>/<name>, for a sweep with its arms)."
        ),
    ] = None,
    base_run: Annotated[
        Path | None, typer.Option("--base-run", help="Reuse the shared stages of this finished run (e.g. runs/demo).")
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            "--seeds",
            min=1,
            help="RL seeds per arm (default 1; `seeds` 3): each arm's RLHF again at the next seeds, a row each, "
            "and a table across seeds (seeds.md). For the experiments whose arms differ only in RLHF.",
        ),
    ] = None,
    arms: Annotated[
        list[str] | None,
        typer.Option(
            "--arm",
            help='A sweep\'s arm: its name, then the RLHF settings it changes, e.g. --arm "hot rl.temperature=1.2" '
            "(an arm with a name alone runs the config as given). Two or more.",
        ),
    ] = None,
    ray_address: RayOpt = None,
) -> None:
    """A controlled comparison: arms that change one setting, same seeds, one MLflow parent run, a table and a plot."""
    if name not in (*EXPERIMENT_NAMES, "sweep"):
        raise typer.BadParameter(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENT_NAMES)} or sweep")
    from conf.load import ConfigError
    from experiments import registry, sweep
    from experiments.runner import ExperimentRefused, arm_configs, seeded_arms
    from experiments.runner import run as run_experiment
    from pipelines.run_config import ConfigChanged

    use_ray(ray_address)
    cfg, _ = config_and_dir(config, overrides, None)
    try:
        if name == sweep.NAME:
            exp = sweep.sweep(arms or [])
        elif arms:
            raise ExperimentRefused(f"--arm is for `tokenmdp experiment sweep`; {name}'s arms are its own")
        else:
            exp = registry()[name]
        out = out or (
            sweep.default_out(cfg, exp) if name == sweep.NAME else Path("runs") / "experiments" / cfg.name / name
        )
        arm_configs(exp, cfg, seeded_arms(exp, cfg, seeds or exp.seeds))  # refused before the directory is made
        with single_writer(out), clear_refusals():
            run_experiment(exp, cfg, out, base_run=base_run, seeds=seeds)
    except (ConfigChanged, ConfigError, ExperimentRefused, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="models:/<name>/<version>, a run directory or a checkpoint file.")],
    config: ConfigArg = "demo",
    overrides: SetOpt = None,
    host: Annotated[str | None, typer.Option(help="Default: serve.host of the config.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Default: serve.port of the config.")] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(help="The replicas' weights and KV cache. Default: serve.precision of the config (float32)."),
    ] = None,
    ray_address: RayOpt = None,
) -> None:
    """Serve a policy over HTTP with Ray Serve until interrupted (POST /v1/continue, /v1/completions)."""
    from serve.launch import CannotListen, start

    use_ray(ray_address)
    cfg, _ = config_and_dir(config, overrides, None)
    given = {"host": host, "port": port, "precision": precision}
    settings = cfg.serve.model_copy(update={k: v for k, v in given.items() if v is not None})
    try:
        with clear_refusals():
            url = start(model, settings)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err), param_hint="--model") from None
    except CannotListen as err:
        raise typer.BadParameter(str(err), param_hint="--port") from None
    typer.echo(f"serving {model} in {settings.precision} at {url} (docs: {url}/docs); Ctrl-C stops")
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve as ray_serve

        ray_serve.shutdown()


@app.command()
def register(
    source: Annotated[str, typer.Argument(help=POLICY_SOURCE)],
    stage: StageOpt = None,
    name: Annotated[
        str | None, typer.Option(help="The registered model. Default: tokenmdp-<its config's name>.")
    ] = None,
) -> None:
    """Register a policy (a snapshot, SFT's, another run's) as the next version of a model in the MLflow registry."""
    from pipelines.register import register as register_policy

    check_stage(source, stage)
    with clear_refusals():
        done = register_policy(source, stage, name)
    typer.echo(f"registered {done.source} as {done.model_uri}; serve it: tokenmdp serve --model {done.model_uri}")
    typer.echo(json.dumps({"model_uri": done.model_uri, "source": done.source, "iteration": done.iteration}))


@app.command()
def export(
    source: Annotated[str, typer.Argument(help=POLICY_SOURCE)],
    out: Annotated[Path, typer.Option(help="A new or empty directory (or an earlier export's) for the files.")],
    stage: StageOpt = None,
) -> None:
    """Write a policy as a Hugging Face transformers GPT-2 (needs the `hf` extra), checked logit for logit."""
    from models.hf_export import ExportMismatch, OccupiedDirectory, export
    from pipelines.policy_source import final_policy, policy_from

    check_stage(source, stage)
    try:
        import transformers  # noqa: F401
    except ImportError:
        typer.echo("Error: tokenmdp export writes with Hugging Face transformers: pip install -e '.[hf]'", err=True)
        raise typer.Exit(2) from None
    with clear_refusals():
        chosen = policy_from(source, stage) if stage else final_policy(source)
        try:
            done = export(chosen.model, chosen.space, out)
        except OccupiedDirectory as err:
            raise typer.BadParameter(str(err), param_hint="--out") from None
        except ExportMismatch as err:
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(1) from None
    typer.echo(
        f"exported {source} ({chosen.name}) to {out}: load it with GPT2LMHeadModel.from_pretrained({str(out)!r}); "
        f"largest logit difference from the policy {done['largest_logit_difference']:.2g} on the probe prompts"
    )
    typer.echo(json.dumps(done | {"source": source, "policy": chosen.name}))
