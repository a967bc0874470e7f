"""Hypothesis strategies for gradcheck.check: shapes and inputs where gradient kernels break.

Each strategy draws keyword arguments for ``gradcheck.check``: an op's sizes biased to the block
size (block - 1, block, block + 1, 2 * block + 1, powers of two, primes, % 4 tails, sizes above
1024), the ``block``, the op's options, a ``seed`` and one of the suite's input distributions
(``case``), kept small: on the cpu backend (2 cores, kernels compiled) a check of a drawn
example took a median 0.85 s for loss-ce, 1.5 s for layernorm-bwd and 3.6 s for attention-bwd::

    from hypothesis import given, settings
    import gradcheck
    from gradcheck.strategies import checks

    @settings(max_examples=10, deadline=None)
    @given(checks("loss-ce", case=None))          # case=None: the whole input suite each time
    def test_my_ce_kernel(kw):
        report = gradcheck.check("loss-ce", "my_ce.cu", function="my_ce", **kw)
        assert report.verdict == "pass", str(report)   # the report ends with `reproduce:` lines

Importing this module registers the Hypothesis settings profile ``"gradcheck-ci"`` (``PROFILE``):
derandomized, no deadline (a kernel's first launch compiles it), no ``too_slow`` health check.
The pytest plugin loads it when the environment variable ``CI`` is true and no
``--hypothesis-profile`` was given; elsewhere, ``settings.load_profile(PROFILE)``.
"""

from ._strategies import PROFILE as PROFILE
from ._strategies import checks as checks
from ._strategies import distributions as distributions
from ._strategies import reproduce as reproduce
from ._strategies import sizes as sizes

__all__ = ["PROFILE", "checks", "distributions", "reproduce", "sizes"]
