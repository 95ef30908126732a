"""What every `tokenmdp` command shares: the app, its common arguments, and the refusals that turn what a user
can fix into a few lines instead of a traceback. The commands are in `cli/train.py` and `cli/read.py`."""

from __future__ import annotations

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
app.add_typer(world_app, name="world")


POLICY_SOURCE = "A run directory (e.g. runs/demo), a registered model (models:/<name>/<version>) or a checkpoint."
StageOpt = Annotated[str | None, typer.Option(help="A run directory's stage: sft or rlhf. Default: its final policy.")]


def check_stage(source: str, stage: str | None) -> None:
    """--stage names one of a run directory's policies; anything else is refused before any work."""
    from pipelines.run_config import POLICY_STAGES

    if stage is not None and (stage not in POLICY_STAGES or not Path(source).is_dir()):
        raise typer.BadParameter(
            f"{stage!r} for {source}: --stage names a policy's stage ({', '.join(POLICY_STAGES)}) in a run directory",
            param_hint="--stage",
        )


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
    for line in machine_lines():
        typer.echo(line)
    raise typer.Exit()


def machine_lines() -> list[str]:
    """What this machine runs the policy's arithmetic on. Each CPU's float32 kernels sum in their own order, so one
    seed gives one trajectory per CPU, and the fused step's speed depends on the CPU: a report needs both."""
    import torch

    from models import fused_decode
    from models.kernels import cpu_vendor, current_kernel

    return [
        f"cpu {torch.backends.cpu.get_cpu_capability()} {cpu_vendor() or '(vendor unknown)'}, "
        f"{torch.get_num_threads()} torch threads by default",
        f"linears {current_kernel()} (TOKENMDP_LINEARS=onednn|sgemm to choose)",
        f"fused decoding step {fused_decode.status()}",
    ]


@app.callback()
def _main(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the versions and exit.")
    ] = False,
) -> None:
    """TokenMDP: RLHF that treats a GPT as a policy over a token-level MDP."""


ConfigArg = Annotated[str, typer.Argument(help=f"A preset ({', '.join(preset_names())}) or a YAML path.")]


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set world.seed=3")]


def terms_arg(text: str, what: str = "sequence") -> list[int]:
    from world.user_data import parse_terms

    try:
        return parse_terms(text, what)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


OutOpt = Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/<config name>).")]


RayOpt = Annotated[
    str | None, typer.Option("--ray-address", help="Join this Ray cluster (default: RAY_ADDRESS, else a local Ray).")
]


def use_ray(address: str | None) -> None:
    import os

    if address:
        os.environ["RAY_ADDRESS"] = address


def config_and_dir(config: str, overrides: list[str] | None, out: Path | None):
    from conf.load import ConfigError, load_config

    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as err:
        raise typer.BadParameter(str(err)) from None
    return cfg, out or Path("runs") / cfg.name


@contextmanager
def writing_stage(config: str, overrides: list[str] | None, out: Path | None) -> Iterator[tuple[Config, Path]]:
    """The config and run directory of a command that trains a stage, held for the command's length: no other
    command writes into the directory meanwhile, and no stage trained under another config may be in it."""
    from pipelines.run_config import ConfigChanged, guard_run_dir

    cfg, run_dir = config_and_dir(config, overrides, out)
    with single_writer(run_dir), clear_refusals():
        try:
            guard_run_dir(run_dir, cfg.model_dump())
        except ConfigChanged as err:
            raise typer.BadParameter(str(err), param_hint="--out") from None
        yield cfg, run_dir


@contextmanager
def single_writer(run_dir: Path) -> Iterator[None]:
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
def clear_refusals() -> Iterator[None]:
    """What a user can fix, said in a few lines instead of a traceback: a stage run before the one it starts
    from (which command to run), a run directory without what a reading command needs, a data file with
    bad lines (every one, by number), a tracking server that does not answer, actors this Ray can never start."""
    from actors.cluster import ActorsLost, DoesNotFit
    from pipelines.run_config import MissingStage, RunDirError
    from pipelines.tracking import TrackingUnreachable
    from world.actions import ActionSpaceMismatch
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
    except ActionSpaceMismatch as err:  # a policy asked questions spelled under another action space
        raise typer.BadParameter(str(err)) from None
    except (TrackingUnreachable, ActorsLost) as err:  # nothing trained is lost: the same command resumes
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(1) from None
