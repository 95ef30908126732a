"""Hand-computed exam answers: the grader is ground truth, so each case is checked by hand."""

import pytest

from world.grader import SimulatedLabeler, analyze, grade

CLASSICS = [
    ([1, 2, 4, 8, 16], 32, "geometric"),
    ([2, 3, 5, 7, 11], 13, "primes"),
    ([1, 1, 2, 3, 5, 8], 13, "fibonacci"),
    ([1, 4, 9, 16, 25], 36, "power"),
    ([1, 4, 9, 16], 25, "power"),
    ([1, 8, 27, 64, 125], 216, "power"),
    ([1, 2, 4, 7, 11], 16, "differences"),  # differences 1 2 3 4
    ([2, 6, 12, 20, 30], 42, "differences"),  # second differences constant 2
    ([1, 2, 5, 14, 41], 122, "differences"),  # differences x3
    ([1, 2, 6, 24, 120], 720, "ratios"),  # ratios 2 3 4 5
    ([1, 3, 7, 15, 31], 63, "exponential"),  # 2^(n+1) - 1
    ([0, 1, 1, 2, 4, 7, 13], 24, "tribonacci"),
    ([1, 10, 2, 20, 3, 30, 4, 40, 5], 50, "interleaved"),
    ([2, 5, 26, 677], 458330, "square_plus"),  # x^2 + 1
    ([1, 2, 2, 4, 8, 32], 256, "product"),
    ([64, 32, 16, 8], 4, "geometric"),  # ratio 1/2
    ([81, -27, 9, -3], 1, "geometric"),  # ratio -1/3
    ([-3, -1, 1, 3, 5], 7, "arithmetic"),
    ([10, 9, 7, 4, 0], -5, "differences"),
    ([1, 4, 13, 40, 121], 364, "affine"),  # 3x + 1
    ([5, 5, 5, 5], 5, "constant"),
]


@pytest.mark.parametrize(("prefix", "answer", "template"), CLASSICS)
def test_classic_questions(prefix, answer, template):
    verdict = analyze(prefix)
    assert verdict.status == "ok"
    assert verdict.answer[0] == answer
    assert verdict.template == template
    assert grade(prefix, [answer]) == 1


def test_the_essays_game():
    prefix = [1, 2, 4, 8, 16]
    assert grade(prefix, [32]) == 1
    assert grade(prefix, [31]) == 0  # degree-4 polynomial (A000127): 5 params need 7 terms, never admissible
    assert grade(prefix, [114514]) == 0


def test_multi_term_continuation():
    assert grade([1, 2, 4, 8, 16], [32, 64]) == 1
    assert grade([1, 2, 4, 8, 16], [32, 63]) == 0
    assert grade([1, 2, 4, 8, 16], [32, 64, 128, 256, 512]) == 1
    assert grade([1, 2, 4, 8, 16], [32], n_terms=2) == 0


def test_malformed_or_empty_response_scores_zero():
    assert grade([1, 2, 4, 8, 16], None) == 0
    assert grade([1, 2, 4, 8, 16], []) == 0


def test_thirty_digit_terms_are_exact():
    base = 10**25
    prefix = [base + 7 * i for i in range(5)]
    assert analyze(prefix).answer[0] == base + 35
    assert grade(prefix, [base + 35]) == 1
    assert grade(prefix, [base + 34]) == 0
    big = [3 * 7**k for k in range(30, 35)]
    assert len(str(big[-1])) >= 30
    assert grade(big, [3 * 7**35]) == 1


def test_ambiguous_prefix_has_no_answer():
    verdict = analyze([-1, 3, 5, 9])  # primes from 7 minus 8, or primes from 13 minus 14
    assert verdict.status == "ambiguous"
    assert verdict.answer is None
    assert {alt[1][0] for alt in verdict.alternatives} == {15}
    assert grade([-1, 3, 5, 9], [15]) is None


@pytest.mark.parametrize("prefix", [[837, 130, 5, 391, 3281], [1, 2, 3, 5, 7, 11], [1, 2, 4], [7]])
def test_patternless_or_too_short_prefix_has_no_rule(prefix):
    verdict = analyze(prefix)
    assert verdict.status == "no_rule"
    assert grade(prefix, [1]) is None


def test_rule_needs_two_more_terms_than_parameters():
    # Arithmetic has 2 parameters: 3 terms are not enough to assert it, 4 are.
    assert analyze([2, 4, 6]).status == "no_rule"
    assert analyze([2, 4, 6, 8]).answer[0] == 10


def test_labeler_prefers_gold_and_flips_at_the_noise_rate():
    clean = SimulatedLabeler(noise=0.0, seed=1)
    assert clean.prefer([1, 2, 4, 8, 16], [32], [31]) == 0
    assert clean.prefer([1, 2, 4, 8, 16], [114514], [32]) == 1
    assert clean.prefer([1, 2, 4, 8, 16], [31], [114514]) is None  # both wrong: no preference
    assert clean.prefer([837, 130, 5, 391, 3281], [1], [2]) is None  # no gold answer
    noisy = SimulatedLabeler(noise=0.2, seed=1)
    flips = sum(noisy.prefer([1, 2, 4, 8, 16], [32], [31]) for _ in range(5000))
    assert 900 < flips < 1100


def test_labeler_rejects_noise_over_half():
    with pytest.raises(ValueError, match="noise"):
        SimulatedLabeler(noise=0.7)


def test_a_recurrence_stops_comparing_at_the_first_term_that_differs():
    from fractions import Fraction

    from world.rules import _Recurrence

    calls = []

    def square_plus_one(terms):
        calls.append(len(terms))
        return terms[-1] ** 2 + Fraction(1)

    squares = _Recurrence((2,), square_plus_one)
    assert squares.matches((2, 5, 26, 677)) and calls == [1, 2, 3]
    calls.clear()
    assert not squares.matches((2, 5, 7, 8, 9, 10, 11, 12)) and calls == [1, 2]  # 26 != 7: no further term
    calls.clear()
    assert not squares.matches((3, 10)) and calls == []  # the seed differs
    assert squares(4) == (2, 5, 26, 677)


def test_a_long_prefix_is_graded_without_growing_the_digits_of_squares():
    # a^2 + c and products of neighbours fit every prefix's first terms; generating 40 terms of them whole
    # before comparing doubles the digits at each step (25 terms took 5 s, each term 3x more)
    verdict = analyze(list(range(1, 41)))
    assert verdict.status == "ok" and verdict.answer[:1] == (41,) and verdict.template == "arithmetic"
