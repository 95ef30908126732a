"""Views of an exam prompt: the same series from a later term, the response untouched."""

from world.actions import ActionSpace
from world.views import prompt_views

SPACE = ActionSpace()


def _sequence(terms, answer):
    return SPACE.encode_prompt(terms) + SPACE.encode_response([answer])


def test_views_drop_leading_terms_and_keep_the_response():
    views = prompt_views(SPACE, _sequence([1, 2, 4, 8, 16], 32), count=3, min_terms=3)
    assert views == [_sequence([1, 2, 4, 8, 16], 32), _sequence([2, 4, 8, 16], 32), _sequence([4, 8, 16], 32)]


def test_views_stop_at_the_minimum_number_of_terms():
    assert prompt_views(SPACE, _sequence([12, 34, 56, 78], 90), count=5, min_terms=3) == [
        _sequence([12, 34, 56, 78], 90),
        _sequence([34, 56, 78], 90),
    ]


def test_one_view_or_no_prompt_leaves_the_sequence_alone():
    seq = _sequence([-3, 10, 200], 7)
    assert prompt_views(SPACE, seq, count=1, min_terms=1) == [seq]
    document = SPACE.encode_sequence([1, 2, 3])  # no `?`: not a prompt
    assert prompt_views(SPACE, document, count=3, min_terms=1) == [document]
