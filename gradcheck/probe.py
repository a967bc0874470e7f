"""The data-alignment probe: is the loss stuck because the targets are not the next tokens?

``check_alignment`` measures which shift of the inputs the targets are (a copy task, a double
shift, unrelated labels) and whether the labels are usable: in range, mostly not ignored, not on
padding, EOS labels kept. ``watch`` wraps a data loader and checks its first batches::

    >>> import numpy as np
    >>> from gradcheck import probe
    >>> tokens = np.random.default_rng(0).integers(0, 1000, size=(4, 129))
    >>> report = probe.check_alignment(tokens[:, :-1], tokens[:, 1:], vocab=1000)
    >>> report.verdict
    'pass'
    >>> probe.check_alignment(tokens[:, :-1], tokens[:, :-1]).best_shift   # a copy task
    0
    >>> batches = [(tokens[:, :-1], tokens[:, 1:])] * 3
    >>> for inputs, targets in probe.watch(batches, n=2, vocab=1000):
    ...     pass                                     # the training step goes here
"""

from ._alignment import AlignmentReport as AlignmentReport
from ._alignment import DataMisalignmentWarning as DataMisalignmentWarning
from ._alignment import SizedWatch as SizedWatch
from ._alignment import Watch as Watch
from ._alignment import check_alignment as check_alignment
from ._alignment import watch as watch
from ._errors import DataMisalignment as DataMisalignment

__all__ = [
    "AlignmentReport",
    "DataMisalignment",
    "DataMisalignmentWarning",
    "SizedWatch",
    "Watch",
    "check_alignment",
    "watch",
]
