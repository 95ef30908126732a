import copy
import pickle
import threading

import pytest
import torch

from models.fused_decode import fused
from models.gpt import GPT, GPTConfig
from models.kv_cache import KVMemory
from models.sampling import generate
from world.actions import ActionSpace

SPACE = ActionSpace()
PROMPTS = [SPACE.encode_prompt(terms) for terms in ([1, 2, 4, 8], [3, 5], [10, 20, 30])]


def test_memory_is_kept_and_lent_again_growing_to_the_largest_ask():
    memory = KVMemory()
    with memory.lend() as take:
        first = take(10, torch.float32, torch.device("cpu"))
        first.fill_(7.0)
    with memory.lend() as take:
        again = take(6, torch.float32, torch.device("cpu"))
    assert again.data_ptr() == first.data_ptr() and torch.equal(again, torch.full((6,), 7.0))
    with memory.lend() as take:
        grown = take(20, torch.float32, torch.device("cpu"))
        assert grown.numel() == 20 and torch.equal(grown, torch.zeros(20))  # fresh memory starts at zero
        assert take(4, torch.bfloat16, torch.device("cpu")).dtype == torch.bfloat16


def test_memory_is_lent_to_one_borrower_at_a_time():
    memory = KVMemory()
    seen = []
    with memory.lend() as take:
        assert take is not None
        other = threading.Thread(target=lambda: seen.append(memory.lend().__enter__()))
        other.start()
        other.join()
    assert seen == [None]  # the second borrower gets none: it allocates its own
    with memory.lend() as take:
        assert take is not None  # returned, lent again


def test_copies_and_pickles_of_a_model_start_with_memory_of_their_own():
    model = GPT(GPTConfig(vocab_size=SPACE.size, n_layer=1, n_head=2, d_model=8, max_len=32)).eval()
    generate(model, PROMPTS, max_new_tokens=3, eor_id=SPACE.eor_id, pad_id=SPACE.pad_id)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.kv_memory is not model.kv_memory and other.kv_memory._flat is None


@pytest.mark.parametrize("fused_step", [True, False])
def test_sampling_on_kept_memory_draws_what_it_draws_on_fresh_memory(fused_step):
    """The second call's cache holds the first call's keys and values where it has not yet written;
    the eager step attends over those positions too, under a -inf bias."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=SPACE.size, n_layer=2, n_head=2, d_model=16, max_len=32)).eval()

    def draw():
        with fused(fused_step):
            gen = generate(
                model, PROMPTS, max_new_tokens=6, eor_id=SPACE.eor_id, pad_id=SPACE.pad_id,
                generator=torch.Generator().manual_seed(1),
            )  # fmt: skip
        return gen.tokens, gen.logprobs

    first = draw()
    generate(model, PROMPTS[::-1] * 2, max_new_tokens=9, eor_id=SPACE.eor_id, pad_id=SPACE.pad_id)  # leaves its own
    model.kv_memory = KVMemory()
    fresh = draw()
    with torch.inference_mode():  # where sampling made it
        model.kv_memory._flat.fill_(1e30)  # far from zero, still finite
    kept = draw()
    assert torch.equal(first[0], fresh[0]) and torch.equal(fresh[0], kept[0])
    assert torch.equal(fresh[1], kept[1])
