"""The repository's gradient kernels, checked by gradcheck's pytest plugin (the `gradcheck` fixture).

A check fails the test with gradcheck's report (what is wrong, where, and the `gradcheck run`
command that reproduces it) on kernel-bug, and on inconclusive too: a check that could not have
seen an error must not pass.
"""

from pathlib import Path

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
XENT = str(KERNELS / "xent_grad.cu")
LAYERNORM = str(KERNELS / "layernorm_bwd.cu")


def test_xent_grad_below_and_above_the_block_size(gradcheck):
    for vocab in (50, 1003):  # vocab < blockDim.x, and a vocab % 4 tail
        gradcheck.check("loss-ce", XENT, function="xent_grad", rows=4, vocab=vocab)


def test_layernorm_backward(gradcheck):
    report = gradcheck.check(
        "layernorm-bwd", LAYERNORM, function="layernorm_bwd", rows=4, hidden=127, block=128
    )
    assert {c.output for c in report.checks if c.name == "compare"} == {"dx", "dgamma", "dbeta"}


def test_xent_grad_over_the_shapes_that_break_kernels(gradcheck):
    # Hypothesis draws vocab and blockDim.x around each other (block - 1, block, block + 1, ...).
    gradcheck.sweep("loss-ce", XENT, function="xent_grad", max_examples=3)
