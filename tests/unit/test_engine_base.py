"""The request checks every engine shares (rayhet.engines.base)."""

import pytest

from rayhet.engines.base import InvalidRequestError, check_fits, check_one_prompt, check_token_ids


def test_exactly_one_prompt_form():
    check_one_prompt("hi", None, None)
    check_one_prompt(None, [1], None)
    for args in [(None, None, None), ("hi", [1], None), ("hi", None, [{"role": "user", "content": "x"}])]:
        with pytest.raises(InvalidRequestError, match="exactly one") as e:
            check_one_prompt(*args)
        assert e.value.param == "prompt"


def test_token_ids_are_integers_inside_the_vocabulary():
    assert check_token_ids((0, 5, 9), 10) == [0, 5, 9]
    for bad in ([10], [-1], [1.0], [True], ["3"]):
        with pytest.raises(InvalidRequestError, match=r"outside \[0, 10\)") as e:
            check_token_ids(bad, 10)
        assert e.value.param == "prompt_token_ids"


def test_prompt_plus_max_tokens_must_fit():
    check_fits(10, 54, 64)
    with pytest.raises(InvalidRequestError, match="= 65 exceeds the context of 64") as e:
        check_fits(10, 55, 64)
    assert e.value.param == "max_tokens"
    with pytest.raises(InvalidRequestError, match="empty"):
        check_fits(0, 1, 64)
