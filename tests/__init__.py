"""The test suite. Importing it (before torch is) splits the machine's cores among pytest-xdist's workers.

``pytest -n N`` runs N worker processes side by side, and many tests start more (the real CLI, DDP).
Each torch process would otherwise start one OpenMP thread per core, whose spinning threads then
fight over the same cores: on a 2-core machine with two workers, one thread each cut the suite's
CPU time by about a third. Set in the environment so that the subprocesses the tests start inherit it; a value the
caller already set wins.
"""

import os

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # a worker of pytest -n N (set before it imports this)
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
