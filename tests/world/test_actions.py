import pytest
from hypothesis import given
from hypothesis import strategies as st

from world.actions import ActionSpace, ActionSpaceMismatch, MalformedText

SPACES = [ActionSpace(), ActionSpace(digit_order="lsb")]
integers = st.integers(min_value=-(10**40), max_value=10**40)


@pytest.mark.parametrize("space", SPACES)
@given(terms=st.lists(integers, max_size=12))
def test_terms_round_trip(space, terms):
    assert space.decode_terms(space.encode_terms(terms)) == terms


@pytest.mark.parametrize("space", SPACES)
@given(terms=st.lists(integers, min_size=1, max_size=8))
def test_response_round_trip(space, terms):
    parsed = space.parse_response(space.encode_response(terms))
    assert parsed.terms == terms
    assert parsed.well_formed


def test_spelling_by_digit_order():
    assert "".join(ActionSpace().spell_terms([123, -45])) == "123,-45"
    assert "".join(ActionSpace(digit_order="lsb").spell_terms([123, -45])) == "321,-54"


def test_prompt_framing():
    space = ActionSpace()
    assert space.decode_tokens(space.encode_prompt([1, 2])) == ["<bos>", "1", ",", "2", "?"]
    assert space.decode_tokens(space.encode_response([32])) == ["3", "2", "<eor>"]


@pytest.mark.parametrize("tokens", [list("1,,2"), ["-"], list("1-2"), list("01"), list("-0"), ["<bos>"], list("2,")])
def test_malformed_text_is_refused(tokens):
    with pytest.raises(MalformedText):
        ActionSpace().parse_terms(tokens)


def test_unfinished_or_garbled_response_is_not_well_formed():
    space = ActionSpace()
    assert not space.parse_response(space.encode_terms([32])).well_formed  # no <eor>
    assert space.parse_response([space.eor_id]).terms is None
    assert space.parse_response(space.encode_tokens(["3", "-", "<eor>"])).error


def test_action_space_is_frozen_into_checkpoints():
    space = ActionSpace()
    assert ActionSpace.from_dict(space.to_dict()) == space
    space.require_same(ActionSpace.from_dict(space.to_dict()))
    with pytest.raises(ActionSpaceMismatch, match="frozen at pretraining"):
        space.require_same(ActionSpace(digit_order="lsb"))
    with pytest.raises(ActionSpaceMismatch):
        space.id("<ans>")
