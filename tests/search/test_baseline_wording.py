"""Step 1's interpretation says what was found: the cheapest passing candidate, and the cheaper ones that fail."""

from __future__ import annotations

import pytest

from sweeper.search.baseline import interpret

# the MNIST example's Step-1 outcome: w4a8 is the cheapest candidate that meets the target
EXAMPLE = {"w2a8": False, "w4a4": False, "w4a8": True, "w4a16": True, "w8a8": True, "w8a16": True,
           "w16a16": True, "fp16": True}


def test_a_cheaper_4_bit_choice_is_named_not_w8a8() -> None:
    text = interpret(EXAMPLE, chosen="w4a8")
    assert text.startswith("even 4-bit weights pass: w4a8 meets the target")
    assert "w2a8, w4a4 do not" in text
    assert "quantizes well at 8 bits" not in text


def test_the_chosen_candidate_defaults_to_the_cheapest_passing_one() -> None:
    assert interpret(EXAMPLE) == interpret(EXAMPLE, chosen="w4a8")


@pytest.mark.parametrize(("ok", "expected"), [
    ({"w4a4": True, "w8a8": True}, "even 4-bit weights and 4-bit activations pass: w4a4 meets the target."),
    ({"w2a8": True, "w8a8": True}, "even 2-bit weights pass: w2a8 meets the target."),
    ({"w4a16": True, "w4a8": False, "w8a8": False},
     "even 4-bit weights (with 16-bit activations) pass: w4a16 meets the target (w4a8, w8a8 do not)."),
    ({"w8a4": True, "w8a8": True}, "even 4-bit activations (with 8-bit weights) pass: w8a4 meets the target."),
    ({"w8a8": True, "w4a8": False, "fp16": True},
     "w8a8 meets the target: the model quantizes well at 8 bits (w4a8 does not)."),
    ({"w8a8": True, "w8a16": True}, "w8a8 meets the target: the model quantizes well at 8 bits."),
    ({"w8a8": False, "w8a16": True, "fp16": True},
     "w8a16 meets the target but w8a8 does not: activation-sensitive (keep 16-bit activations or mix)."),
    ({"w8a8": False, "w8a16": False, "w16a16": True},
     "w16a16 meets the target but w8a16 does not: weight-sensitive (keep 16-bit weights or mix)."),
    ({"w8a8": False, "w16a16": False, "fp16": True},
     "only fp16 meets the target (w8a8, w16a16 do not): layer-sensitive (a few layers need float; try LiteMP / AMP)."),
    ({"w8a8": False, "fp16": False}, "no candidate meets the target: relax max_drop or use AdaRound/QAT."),
    ({"w8a16": True}, "w8a16 is the cheapest candidate that meets the target."),
])
def test_wording_rules(ok: dict[str, bool], expected: str) -> None:
    assert interpret(ok) == expected
