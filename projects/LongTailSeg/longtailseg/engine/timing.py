"""Fair timing of several variants of one computation, for the benchmark tools.

Variants run round-robin (every round runs each variant once, in the given order) on the same
inputs, so that drifts of a shared machine (other processes, clock, allocator state) fall on all
of them alike rather than on whichever runs first; the medians of the rounds are then comparable
as ratios even where the absolute times are not.
"""
import resource
import sys
import time
from typing import Callable, Dict, List, Optional


def round_robin_times(steps: Dict[str, Callable[[], None]], repeats: int, warmup: int = 2,
                      before_step: Optional[Callable[[str], None]] = None,
                      after_step: Optional[Callable[[str], None]] = None,
                      progress: Optional[Callable[[], None]] = None) -> Dict[str, List[float]]:
    """Seconds of each of ``repeats`` timed calls of every step, after ``warmup`` untimed calls.

    ``steps`` maps names to callables that run one step to completion (a GPU step must
    synchronise before it returns). ``before_step`` / ``after_step`` (given the name) run outside
    the timed region, e.g. to reset and read a peak-memory counter; ``progress`` is called after
    every call, warm-up included (``len(steps) * (warmup + repeats)`` calls in all).
    """
    for name, step in steps.items():
        for _ in range(warmup):
            step()
            if progress:
                progress()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if before_step:
                before_step(name)
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
            if after_step:
                after_step(name)
            if progress:
                progress()
    return times


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes (Linux only)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (VmHWM) to its current resident size;
    False where the kernel does not allow it (then the mark keeps the whole process's peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The process's resident-set high-water mark: VmHWM where /proc exists, else ru_maxrss
    (monotonic over the process's life)."""
    try:
        return status_bytes("VmHWM")
    except (OSError, RuntimeError):
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux
