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
