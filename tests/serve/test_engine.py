"""The served policy without Ray or HTTP: which requests may share a batch, and that sharing one changes nothing."""

from serve.engine import PolicyEngine, Sampling, sampling_groups


def test_requests_share_a_batch_only_with_the_same_sampling_and_budget():
    greedy, hot, seeded = Sampling(), Sampling(temperature=1.0), Sampling(temperature=1.0, seed=3)
    groups = sampling_groups([greedy, hot, greedy, seeded, hot, seeded], budgets=[16, 16, 16, 16, 16, 16])
    assert sorted(groups.values()) == [[0, 2], [1, 4], [3], [5]]  # a seeded request always alone
    by_budget = sampling_groups([greedy, greedy, greedy], budgets=[16, 4, 16])
    assert sorted(by_budget.values()) == [[0, 2], [1]]
    assert sorted(sampling_groups([greedy, hot, greedy]).values()) == [[0, 2], [1]]  # continuations: no budget


def test_a_completion_batched_with_others_is_the_one_it_gets_alone(tiny_sft_run):
    engine = PolicyEngine(tiny_sft_run / "sft" / "checkpoint.pt")
    requests = [
        ([1, 2, 4, 8, 16], 16, Sampling()),
        ([3, 6, 9, 12], 16, Sampling()),
        ([1, 2, 4, 8, 16], 1, Sampling()),  # one action: cut before <eor>
        ([5, 10, 15], 16, Sampling(temperature=1.0, seed=11)),
        ([2, 4, 6, 8], 16, Sampling()),
    ]
    together = engine.complete_batch(requests)
    alone = [engine.complete_batch([request])[0] for request in requests]
    assert together == alone
    assert together[2].tokens == 1 and together[2].finish_reason == "length"
    assert together[0].finish_reason == "stop" and together[0].text.isdigit()
