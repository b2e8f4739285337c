"""Timing helpers shared by the benchmarks."""

import statistics
import time


def alternating_medians(fns, repeat, setups=None):
    """Median wall time of each function, the functions run in turn.

    Runs go ours, theirs, ours, theirs, ... rather than all of ours first:
    on a shared VM the speed of the machine drifts by 1.5-2x within a minute,
    and alternating exposes both sides to the same drift.

    :param fns: callables to time
    :param int repeat: runs of each
    :param setups: optional callables, one per function, run untimed before
        each of its runs (``None`` entries allowed)
    :returns: list of medians in seconds, in the order of ``fns``
    """
    setups = setups or [None] * len(fns)
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, setup, out in zip(fns, setups, times):
            if setup is not None:
                setup()
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]
