"""Peak RSS of the measuring process, as source code for the ``python -c`` children.

``ru_maxrss`` survives ``exec``: a child started by a large parent (run_all.py
after the volume benchmarks) reports the parent's peak. Linux's ``VmHWM`` is
the peak of the process's own memory since it exec'd.
"""

PEAK_RSS_SOURCE = r'''
def peak_rss_mb():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
'''
