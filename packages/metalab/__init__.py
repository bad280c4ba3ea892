"""metalab: training and reasoning as optimization, reproducible on a laptop, scalable on a GPU.

Subpackages: ``core`` (shared training core), ``cli`` (the ``metalab`` command) and one
subpackage per line of research. Importing :mod:`metalab` is cheap: it does not import torch.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
