"""Learning rate or gradient? ``diagnose_training`` decides, with the numbers behind it.

On a few fixed batches it checks the gradient your training uses (``grad_fn``: a model whose
backward runs your CUDA kernel, say) against the float64 gradient of a JAX reference loss,
runs the Taylor and Armijo tests along it, and only when the gradient holds up measures the
critical step and the sharpness that bound a stable learning rate. Verdicts: ``pass``,
``kernel-bug``, ``lr-problem``, ``inconclusive`` (DIAGNOSTIC_GUIDE.md#lr-or-gradient)::

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from gradcheck.training import diagnose_training
    >>> def loss_fn(params, batch):
    ...     x, y = batch
    ...     logp = jax.nn.log_softmax(x @ params["w"] + params["b"])
    ...     return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    >>> rng = np.random.default_rng(0)
    >>> params = {"w": rng.normal(0, 0.1, (8, 5)).astype(np.float32), "b": np.zeros(5, np.float32)}
    >>> batches = [(rng.normal(size=(32, 8)).astype(np.float32), rng.integers(0, 5, 32))
    ...            for _ in range(2)]
    >>> wrong = lambda p, b: jax.tree_util.tree_map(lambda g: 2 * g, jax.grad(loss_fn)(p, b))
    >>> report = diagnose_training(loss_fn, wrong, params, batches, lr=0.1)
    >>> report.verdict, report.suggested_lr
    ('kernel-bug', None)
    >>> print(report)  # doctest: +ELLIPSIS
    kernel-bug: the gradient under test is wrong (batch 0 of 2; 45 parameters)
      relative error 1.00 of the float64 reference, ...
      Taylor r(eta): ... flat at 0.50, not 1 (a correct gradient gives r -> 1)
    ...
    >>> diagnose_training(loss_fn, jax.grad(loss_fn), params, batches, lr=0.1).verdict
    'pass'

``optimizer`` is ``"sgd"``, ``"momentum"`` (``SGD(momentum=0.9)``), ``"adam"`` (``Adam()``, its
first step) or an ``SGD`` / ``Adam`` instance; ``Adam(m=..., v=..., step=...)`` takes the
optimizer's moments, so the update probed is the one your next step takes.
"""

from ._training import SGD as SGD
from ._training import Adam as Adam
from ._training import TrainingReport as TrainingReport
from ._training import diagnose_training as diagnose_training

__all__ = ["SGD", "Adam", "TrainingReport", "diagnose_training"]
