"""Timing helpers shared by the benchmarks."""

import statistics
import time


def alternating_runs(fns, repeat, setups=None):
    """Wall times of every run of each function, the functions run in turn.

    Runs go ours, theirs, ours, theirs, ... rather than all of ours first:
    on a shared VM the speed of the machine drifts by 1.5-2x within a minute,
    and alternating exposes both sides to the same drift.

    :param fns: callables to time
    :param int repeat: runs of each
    :param setups: optional callables, one per function, run untimed before
        each of its runs (``None`` entries allowed)
    :returns: one list of times in seconds per function, in run order
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
    return times


def paired_ratio(ours, theirs):
    """Quartiles of ``ours[i] / theirs[i]`` over runs taken back to back.

    A pair shares the machine's speed of the moment, so the spread of the
    paired ratios shows how sure a verdict is, which a ratio of medians
    hides.

    :returns: ``(q1, median, q3)``
    """
    ratios = [o / t for o, t in zip(ours, theirs)]
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q1, median, q3


def comparison(ours, theirs):
    """Row fields for our times against TensorStore's, taken in pairs."""
    q1, ratio, q3 = paired_ratio(ours, theirs)
    return {"ours_s": statistics.median(ours), "tensorstore_s": statistics.median(theirs),
            "ratio": ratio, "ratio_q1": q1, "ratio_q3": q3}


def verdict(q1, q3, target=1.0):
    """``met`` if three pairs in four meet the target, ``MISSED`` if three
    in four miss it, else ``level`` (the runs disagree)."""
    if q3 <= target:
        return "met"
    if q1 > target:
        return "MISSED"
    return "level"
