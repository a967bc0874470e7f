"""gradcheck.strategies: drawn examples are valid checks, inside the budget, biased to the block.

These draw sizes only (no kernel runs) but for one check that holds reproduce() to the line the
report prints, so they take seconds.
"""

from __future__ import annotations

import doctest
import math
from typing import Any

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

import gradcheck
import gradcheck._strategies
from gradcheck._check import _sizes
from gradcheck.ops import OPS, get_op
from gradcheck.strategies import PROFILE, checks, distributions, reproduce, sizes

DRAWS = settings(settings.get_profile(PROFILE), max_examples=60)


@pytest.mark.parametrize("op", list(OPS))
def test_drawn_sizes_are_valid_checks_inside_the_budget(op: str) -> None:
    spec = get_op(op)
    plan = gradcheck._strategies.PLANS[op]

    @DRAWS
    @given(checks(op))
    def drawn(kw: dict[str, Any]) -> None:
        assert kw["block"] in plan.blocks
        dims, _ = _sizes(spec, {k: kw[k] for k in kw if k not in ("block", "seed", "case")})
        spec.validate(dims, kw["block"])  # raises UsageError for sizes the op cannot take
        assert plan.cost(dims) <= plan.max_elements
        assert 0 <= kw["seed"] <= 2**16
        assert kw["case"] is None or kw["case"] in distributions(op, **kw)

    drawn()


@pytest.mark.parametrize(
    ("op", "along", "block", "wanted"),
    [
        ("loss-ce", "vocab", 256, (255, 256, 257, 513, 1027, 50257)),
        ("layernorm-bwd", "hidden", 1024, (1023, 1024, 1025, 2049, 4099)),
        ("attention-bwd", "seq", 128, (127, 128, 129, 1, 61)),
    ],
)
def test_sizes_reach_the_shapes_that_break_kernels(
    op: str, along: str, block: int, wanted: tuple[int, ...]
) -> None:
    strategy = sizes(op, blocks=[block])
    for n in wanted:
        found = find(
            strategy,
            lambda d, n=n: d[along] == n,
            settings=settings(max_examples=5000, database=None),
        )
        assert found[along] == n
    tail = find(strategy, lambda d: d[along] % 4 != 0 and d[along] > block + 1)  # an odd tail
    assert tail[along] > block + 1


def test_options_are_drawn() -> None:
    assert find(sizes("attention-bwd"), lambda d: d["causal"])["causal"] is True
    eps = {find(sizes("layernorm-bwd"), lambda d, e=e: d["eps"] == e)["eps"] for e in (1e-12, 1e-3)}
    assert eps == {1e-12, 1e-3}


@DRAWS
@given(
    checks(
        "loss-ce",
        blocks=[64],
        rows=st.integers(2, 3),
        vocab=65,
        case="masked",
        function="f",
        defines=["X=1"],
    )
)
def test_fixed_keywords_override_draws_and_ride_along(kw: dict[str, Any]) -> None:
    assert kw["rows"] in (2, 3) and kw["vocab"] == 65 and kw["block"] == 64
    assert (kw["case"], kw["function"], kw["defines"]) == ("masked", "f", ["X=1"])


def test_unknown_keywords_and_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(gradcheck.UsageError, match=r"vocb=10\): loss-ce has no such keyword\. "):
        sizes("loss-ce", vocb=10)
    with pytest.raises(gradcheck.UsageError, match=r"Did you mean 'seed'\?"):
        checks("loss-ce", sed=1)
    with pytest.raises(gradcheck.UsageError, match=r"takes its sizes, options and block \(rows, "):
        sizes("loss-ce", seed=1)  # checks() draws the seed
    with pytest.raises(gradcheck.UsageError, match=r"Did you mean 'loss-ce'\?"):
        checks("loss_ce")
    with pytest.raises(gradcheck.UsageError, match="blocks contains 2048"):
        sizes("loss-ce", blocks=[256, 2048])
    with pytest.raises(gradcheck.UsageError, match="max_elements=0 must be"):
        sizes("loss-ce", max_elements=0)


@pytest.mark.parametrize(
    ("op", "kw"),
    [
        ("loss-ce", {"rows": 1, "vocab": 300}),
        ("loss-ce", {"rows": 5, "vocab": 3}),
        ("layernorm-bwd", {"rows": 1, "hidden": 40}),
        ("layernorm-bwd", {"rows": 3, "hidden": 7, "eps": 1e-3}),
    ],
)
def test_distributions_are_the_suites_cases_that_are_not_size_probes(
    op: str, kw: dict[str, Any]
) -> None:
    spec = get_op(op)
    dims, options = _sizes(spec, kw)
    suite = [c.name for c in spec.cases(dims, 32, 0, options) if "=" not in c.name]
    assert list(distributions(op, **kw)) == suite


def test_attention_distributions_follow_the_mask_mode() -> None:
    assert distributions("attention-bwd", causal=False)[-1] == "causal"
    assert distributions("attention-bwd", causal=True)[-1] == "no-mask"


def test_reproduce_is_the_line_the_report_prints() -> None:
    kw = {"rows": 3, "vocab": 37, "block": 32, "seed": 5, "backend": "cpu"}
    report = gradcheck.check("loss-ce", "sign-flipped", case="plain", **kw)
    line = reproduce("loss-ce", "sign-flipped", case="plain", **kw)
    assert line == report.reproduce  # a check of one case reproduces that case
    assert line == next(c.reproduce for c in report.findings)
    whole = gradcheck.check("loss-ce", "sign-flipped", **kw)
    assert reproduce("loss-ce", "sign-flipped", **kw) == whole.reproduce
    assert reproduce("loss-ce", vocab=37, factor=4.0, fd32=True, fd32_eps=1e-2) == (
        "gradcheck run loss-ce --rows 64 --vocab 37 --block 256 --seed 0 --factor 4 "
        "--fd32 --fd32-eps 0.01"
    )
    assert reproduce("attention-bwd", seq=9, causal=True, block=32).startswith(
        "gradcheck run attention-bwd --batch 2 --heads 4 --seq 9 --head-dim 64 --causal --block 32"
    )


def test_the_ci_profile_is_registered_on_import() -> None:
    profile = settings.get_profile(PROFILE)
    assert PROFILE == "gradcheck-ci"
    assert profile.derandomize and profile.deadline is None and profile.database is None


def test_docstring_examples_run() -> None:
    result = doctest.testmod(gradcheck._strategies, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_budget_is_elements_of_the_largest_array() -> None:
    plan = gradcheck._strategies.PLANS["attention-bwd"]
    assert plan.cost({"batch": 2, "heads": 2, "seq": 100, "head_dim": 64}) == 4 * 100 * 100
    assert plan.cost({"batch": 1, "heads": 1, "seq": 3, "head_dim": 64}) == 3 * 64
    assert math.isqrt(plan.max_elements) >= 129  # seq = block 128 + 1 fits at one head
