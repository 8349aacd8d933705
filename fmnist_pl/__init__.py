"""fmnist_pl: a PyTorch Lightning project around a fully connected FashionMNIST classifier."""

import os

# OpenMP threads that wait for work sleep rather than spin (unless the user chose otherwise). Set
# before torch loads its OpenMP runtime, which reads it once. On 2 cores, a fit alone is as fast
# either way, and two fits at once (or a fit beside other work) finish in 14 s rather than 26-67 s
# with spinning threads (benchmarks/threads.py, docs/speed.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
