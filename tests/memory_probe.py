"""Peak resident-set growth of a block of code, for memory tests run in a fresh interpreter.

A thread samples /proc/self/statm every 2 ms while the block runs, so the result is the block's
own peak over the RSS just before it (ru_maxrss would also hold the peak of the imports). The
sampler is a daemon and always stopped, so an error in the block fails the test instead of
hanging it.
"""

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


@contextmanager
def peak_growth_kib() -> Iterator[dict[str, int]]:
    """`with peak_growth_kib() as m: ...`; afterwards m["growth_kib"] holds the peak growth."""
    result = {"growth_kib": 0}
    before = rss_kib()
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], rss_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result["growth_kib"] = max(peak[0], rss_kib()) - before
