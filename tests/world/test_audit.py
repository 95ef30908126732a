import random
from itertools import islice

import pytest

from world.actions import ActionSpace
from world.audit import ActionSpaceAuditError, CorpusStats, audit, describe, move_it
from world.corpus import FAMILIES, render, sample_series


@pytest.fixture(scope="module")
def stats():
    space = ActionSpace()
    rng = random.Random(0)
    series = islice(sample_series("train", 0, 0.5, dict.fromkeys(FAMILIES, 1.0)), 500)
    return CorpusStats.from_documents(space, (render(s, space, rng, 0.3, 64) for s in series))


def sft_example(prefix, answer, marker="?"):
    space = ActionSpace()
    tokens = ["<bos>", *space.spell_terms(prefix), marker, *space.spell_terms(answer), "<eor>"]
    return tokens


def test_sft_data_in_the_pretrained_format_passes(stats):
    assert audit("sft", [sft_example([1, 2, 4, 8, 16], [32]), sft_example([3, -1], [-5])], stats) == 2


def test_a_new_action_is_refused_with_the_fix(stats):
    with pytest.raises(ActionSpaceAuditError, match=r"'<ans>'.*Move this data into pretraining"):
        audit("sft", [sft_example([1, 2], [3]), sft_example([1, 2, 4], [8], marker="<ans>")], stats)


def test_a_new_pattern_is_refused(stats):
    # Every token is known, but "?" right after "<bos>" (an empty prompt) never occurs in pretraining.
    with pytest.raises(ActionSpaceAuditError, match=r"pattern '<bos>' then '\?'.*world\.query_rate > 0"):
        audit("sft", [["<bos>", "?", "1", "<eor>"]], stats)


def test_the_fix_names_the_setting_that_moves_the_data():
    # the question marker comes with the question form; any other action or pattern with your own sequences
    assert "world.query_rate > 0" in move_it(("?",)) and "world.query_rate > 0" in move_it(("<digit>", "?"))
    assert "world.extra_sequences" in move_it(("-", "-")) and "world.extra_sequences" in move_it(("<ans>",))
    assert describe(("<ans>",)) == "the action '<ans>'" and describe(("-", "-")) == "the pattern '-' then '-'"


def test_stats_survive_a_round_trip(stats):
    assert CorpusStats.from_dict(stats.to_dict()) == stats


def test_patterns_are_over_token_classes(stats):
    # Any digit after "?" is the pattern "?" then a digit, which pretraining has.
    assert audit("sft", [["<bos>", "5", "?", "9", "<eor>"]], stats) == 1
    with pytest.raises(ActionSpaceAuditError, match=r"pattern '<eor>' then '<digit>'"):
        audit("sft", [["<bos>", "5", "?", "9", "<eor>", "1"]], stats)


def test_rare_tokens_by_their_share_of_the_corpus():
    from collections import Counter

    from world.actions import ActionSpace
    from world.audit import CorpusStats

    space = ActionSpace()
    stats = CorpusStats(tokens=Counter({",": 90, "1": 9, "?": 1}))  # shares 0.90, 0.09, 0.01
    rare = stats.rare_tokens(space, below=0.05)
    assert "?" in rare and "," not in rare and "1" not in rare
    assert set(rare) == set(space.tokens) - {",", "1"}  # never seen counts as rare
    assert "?" not in stats.rare_tokens(space, below=0.01)  # exactly at the bound is not under it
