"""Actors a Ray cluster can never start are refused with what they ask and what it has, not waited for forever."""

import pytest
from typer.testing import CliRunner

from actors.cluster import Demand, DoesNotFit, require_room, rl_demands, shortfall
from cli.main import app
from conf.load import load_config

LAPTOP = [{"CPU": 2.0, "memory": 1e9}]


def flat(output: str) -> str:
    """A CLI error box's text on one line."""
    return " ".join(output.replace("│", " ").split())


def test_what_rlhfs_actors_ask_follows_the_config():
    demands = rl_demands(load_config("cluster").rl.actors, uses_rm=True, uses_critic=False)
    assert [(d.field, d.count, d.cpus, d.gpus) for d in demands] == [
        ("rl.actors.sampler", 8, 4, 0.5), ("rl.actors.reward", 4, 2, 0.25), ("rl.actors.reference", 2, 2, 0.25),
        ("rl.actors.buffer", 1, 1, 0), ("rl.actors.learner", 4, 4, 1),
    ]  # fmt: skip
    local_learner = rl_demands(load_config("tiny").rl.actors, uses_rm=False, uses_critic=True)
    assert [d.field for d in local_learner] == ["rl.actors.sampler", "rl.actors.reference", "rl.actors.critic",
                                                 "rl.actors.buffer"]  # fmt: skip


def test_every_preset_meant_for_a_laptop_fits_one_and_the_cluster_preset_does_not():
    for preset in ("tiny", "demo", "full"):
        cfg = load_config(preset)
        assert shortfall(rl_demands(cfg.rl.actors, True, True), LAPTOP) is None, preset
    cfg = load_config("cluster")
    said = shortfall(rl_demands(cfg.rl.actors, True, False), LAPTOP)
    # 8x4 + 4x2 + 2x2 + 1 + 4x4 = 61 CPUs; 8x0.5 + 4x0.25 + 2x0.25 + 4x1 = 9.5 GPUs
    assert said.startswith("they ask for 61 CPUs and 9.5 GPUs in all (8 x rl.actors.sampler of 4 CPUs and 0.5 GPUs")
    assert said.endswith("the cluster has 2 CPUs and 0 GPUs")


def test_an_actor_larger_than_every_node_never_starts_though_the_sums_fit():
    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert shortfall([Demand("rl.actors.critic", 1, 4, 1), Demand("rl.actors.sampler", 2, 2, 0.5)], nodes) is None
    said = shortfall([Demand("rl.actors.critic", 1, 6, 0)], nodes)
    assert said == "rl.actors.critic asks for more than the largest node has (4 CPUs and 1 GPU)"


def test_the_local_ray_refuses_at_once_and_a_joined_cluster_which_may_grow_only_says_so(ray_local, monkeypatch, capsys):
    gpu_sampler = [Demand("rl.actors.sampler", 1, 0.5, 1)]
    with pytest.raises(DoesNotFit, match=r"RLHF's actors can never all start on this machine's Ray.*has 2 CPUs"):
        require_room(gpu_sampler, "RLHF's actors", "rl.actors.*")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    require_room(gpu_sampler, "RLHF's actors", "rl.actors.*")
    assert "RLHF's actors wait for resources: they ask for 0.5 CPUs and 1 GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_commands_refuse_what_ray_would_wait_for_forever(sft_run, tiny_sft_run, ray_local):
    gpu_rl = ["--set", "rl.reward_source=gold", "--set", "rl.actors.sampler.num_gpus=1"]
    said = CliRunner().invoke(app, ["rlhf", "tiny", "--out", str(sft_run), *gpu_rl], terminal_width=400)
    assert said.exit_code == 2 and "they ask for 0.75 CPUs and 1 GPU in all" in flat(said.output), said.output
    assert not (sft_run / "rlhf").exists()
    checkpoint = str(tiny_sft_run / "sft" / "checkpoint.pt")
    said = CliRunner().invoke(app, ["serve", "tiny", "--model", checkpoint, "--set", "serve.replicas=8", "--port",
                                    "8765"], terminal_width=400)  # fmt: skip
    assert said.exit_code == 2 and "Serve's replicas can never all start" in flat(said.output), said.output
    assert "(8 x serve of 0.5 CPUs and 0 GPUs)" in flat(said.output)


def test_an_actor_kind_takes_its_own_threads_or_rls():
    rl = load_config("tiny", ["rl.threads=3", "rl.actors.sampler.threads=2"]).rl
    assert [rl.threads_of(kind) for kind in ("sampler", "reward", "reference", "critic")] == [2, 3, 3, 3]
    cluster = load_config("cluster").rl  # the judges get the threads of the CPUs they reserve, not the samplers' 4
    assert [cluster.threads_of(kind) for kind in ("sampler", "reward", "reference")] == [4, 2, 2]


@pytest.mark.parametrize("setting", ["rl.actors.buffer.num_gpus=0.5", "rl.actors.buffer.threads=2"])
def test_the_buffer_refuses_resources_it_would_never_use(setting):
    with pytest.raises(ValueError, match=r"actors\.buffer takes num_cpus only"):
        load_config("tiny", [setting])
    assert load_config("tiny", ["rl.actors.buffer.num_cpus=1"]).rl.actors.buffer.num_cpus == 1


@pytest.mark.slow
def test_each_actor_runs_on_the_threads_its_kind_asks_for(sft_run, ray_local):
    import torch

    from models.checkpoint import load_checkpoint
    from pipelines.rl_actors import start_actors
    from world.actions import ActionSpace

    cfg = load_config("tiny", ["rl.reward_source=gold", "rl.advantage=gae", "rl.actors.sampler.threads=2"])
    space = ActionSpace(digit_order=cfg.world.digit_order)
    policy, _, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt", space)
    actors = start_actors(cfg, sft_run, space, policy)
    try:
        threads = [actors.samplers[0], actors.references[0], actors.critic]
        seen = ray_local.get([a.__ray_call__.remote(lambda _self: torch.get_num_threads()) for a in threads])
    finally:
        actors.stop()
    assert seen == [2, 1, 1]  # the sampler's own; the reference and the critic rl.threads (1 in tiny)
