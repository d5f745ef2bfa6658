"""Course kit shared by every homework notebook and by the grader's checks.

The notebooks import it as ``import nncourse``; the grader gives the kernel a read-only copy.
Public surface: the digits split, the course models (``Residual`` is the residual block of
``make_resnet``), ``train``/``evaluate`` and the shipped pretrained weights.
"""

from nncourse.data import load_digits_split
from nncourse.models import Residual, make_cnn, make_mlp, make_resnet
from nncourse.training import evaluate, load_pretrained, train

__all__ = [
    "Residual", "evaluate", "load_digits_split", "load_pretrained", "make_cnn", "make_mlp",
    "make_resnet", "train",
]
