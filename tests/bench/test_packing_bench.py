"""The learner benchmark's packing figures: real tokens counted, packed rows fuller than padded ones."""

import torch

from bench.learner import layout_tokens_per_s
from models.gpt import GPT, GPTConfig
from pipelines.train_loop import lay_out


def test_packed_rows_are_fuller_than_rows_padded_to_the_longest():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, n_layer=1, n_head=2, d_model=16, max_len=32))
    docs = [[1, *([5] * n)] for n in (3, 20, 7, 2, 11, 5)]  # 54 tokens: 6 rows of 21 padded, 2 of 32 packed
    padded_rate, padded_fill = layout_tokens_per_s(model, [lay_out(docs, 0, None)], steps=2)
    packed_rate, packed_fill = layout_tokens_per_s(model, [lay_out(docs, 0, 32)], steps=2)
    assert abs(padded_fill - 54 / 126) < 1e-6
    assert abs(packed_fill - 54 / 64) < 1e-6
    assert padded_rate > 0 and packed_rate > 0
