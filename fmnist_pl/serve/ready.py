"""``python -m fmnist_pl.serve.ready URL HEALTH_URL``: print ``serving URL`` once ``HEALTH_URL`` answers 200.

A process of its own rather than a thread of the service: LitServe forks its HTTP servers, and a
fork taken while another thread holds a lock can leave the child stuck on it. It gives up when the
service that started it is gone. ``X-API-Key`` comes from ``LIT_SERVER_API_KEY``, as the service's.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request

POLL_S = 0.1


def wait_until_ready(health_url: str, parent: int) -> bool:
    """Whether ``health_url`` answered 200 while process ``parent`` was alive."""
    key = os.environ.get("LIT_SERVER_API_KEY")
    request = urllib.request.Request(health_url, headers={"X-API-Key": key} if key else {})
    while os.getppid() == parent:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_S)
    return False


def main(argv: list[str]) -> None:
    url, health_url = argv
    if wait_until_ready(health_url, os.getppid()):
        print(f"serving {url} (the page; POST {url}predict, GET {url}health, {url}info, {url}docs)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
