"""The served policy without Ray or HTTP: which requests may share a batch, and that sharing one changes nothing."""

from serve.engine import PolicyEngine, Sampling, sampling_groups


def test_requests_share_a_batch_only_with_the_same_sampling_and_budget():
    greedy, hot, seeded = Sampling(), Sampling(temperature=1.0), Sampling(temperature=1.0, seed=3)
    groups = sampling_groups([greedy, hot, greedy, seeded, hot, seeded], shapes=[(16, 1)] * 6)
    assert sorted(groups.values()) == [[0, 2], [1, 4], [3], [5]]  # a seeded request always alone
    by_shape = sampling_groups([greedy, greedy, greedy, greedy], shapes=[(16, 1), (4, 1), (16, 1), (16, 2)])
    assert sorted(by_shape.values()) == [[0, 2], [1], [3]]  # the same budget and n
    assert sorted(sampling_groups([greedy, hot, greedy]).values()) == [[0, 2], [1]]  # continuations: no budget


def test_a_completion_batched_with_others_is_the_one_it_gets_alone(tiny_sft_run):
    engine = PolicyEngine(tiny_sft_run / "sft" / "checkpoint.pt")
    hot = Sampling(temperature=1.0, seed=11)
    requests = [
        ([1, 2, 4, 8, 16], 16, Sampling(), 1),
        ([3, 6, 9, 12], 16, Sampling(), 1),
        ([1, 2, 4, 8, 16], 1, Sampling(), 1),  # one action: cut before <eor>
        ([5, 10, 15], 16, hot, 1),
        ([2, 4, 6, 8], 16, Sampling(), 1),
        ([5, 10, 15], 16, hot, 4),  # n samples of one prompt, under one seed
    ]
    together = engine.complete_batch(requests)
    alone = [engine.complete_batch([request])[0] for request in requests]
    assert together == alone
    assert [len(c) for c in together] == [1, 1, 1, 1, 1, 4]
    assert together[2][0].tokens == 1 and together[2][0].finish_reason == "length"
    assert together[0][0].finish_reason == "stop" and together[0][0].text.isdigit()


def test_a_bfloat16_engine_answers_from_bfloat16_weights_with_log_probs_near_the_float32_policys(tiny_sft_run):
    import torch

    from models.rollout import action_logprobs

    checkpoint = tiny_sft_run / "sft" / "checkpoint.pt"
    low, exact = PolicyEngine(checkpoint, precision="bfloat16"), PolicyEngine(checkpoint)
    assert low.precision == "bfloat16" and low.model.tok_emb.weight.dtype == torch.bfloat16
    assert exact.model.tok_emb.weight.dtype == torch.float32
    prefixes = [[1, 2, 4, 8, 16], [3, 6, 9, 12], [5, 10, 15], [2, 4, 6, 8]]
    answers = low.continue_batch([(prefix, 1, Sampling()) for prefix in prefixes])
    for prefix, answer in zip(prefixes, answers, strict=True):
        assert answer.finished and len(answer.logprobs) == 1
        prompt, response = exact.space.encode_prompt(prefix), exact.space.encode_response(answer.terms)
        tokens = torch.tensor([prompt + response])
        with torch.no_grad():  # the float32 policy's log-prob of the bfloat16 engine's answer, teacher-forced
            forced = action_logprobs(exact.model, tokens, torch.ones_like(tokens))[0, len(prompt) :].sum()
        assert answer.logprobs[0] != float(forced)  # bfloat16 rounds: the answer was not the float32 policy's
        assert abs(answer.logprobs[0] - float(forced)) < 0.1 * len(response)  # ... but within bfloat16's rounding


def test_a_replica_runs_on_its_own_threads_or_the_whole_cpus_it_reserves():
    from conf.schema import ServeConfig

    assert ServeConfig().replica_threads == 1  # half a CPU: one thread
    assert ServeConfig(num_cpus=2.5).replica_threads == 2
    assert ServeConfig(num_cpus=2, threads=1).replica_threads == 1
