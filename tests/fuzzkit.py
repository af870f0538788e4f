"""What the fuzz suite (tests/test_fuzz.py) needs besides hypothesis: profiles, a hard time limit
and a memory watch per example, and per-parser statistics for the end of the run.

Profiles (``JOINT_FUZZ_PROFILE`` or pytest's ``--hypothesis-profile``):

- ``ci`` (the default): derandomized (the same examples on every run, so CI is reproducible),
  a budget of a few minutes for the whole suite on 2 cores;
- ``long``: random seeds, many more examples, for local runs (``JOINT_FUZZ_PROFILE=long
  python -m pytest -m fuzz``); a failure prints the ``@reproduce_failure`` line to replay it.

Each example runs under :func:`bounded`: SIGALRM stops it after ``JOINT_FUZZ_TIME`` seconds
(a hang is a failure, not a stuck CI), and a sampling thread records the peak resident memory
above the level before the example (C allocations included, which tracemalloc would not see).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import defaultdict
from typing import Dict, Iterator

from hypothesis import HealthCheck, settings

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the dev extra
    psutil = None

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
settings.register_profile("ci", derandomize=True, max_examples=600, **_COMMON)
settings.register_profile("long", derandomize=False, max_examples=1500, **_COMMON)
settings.load_profile(os.environ.get("JOINT_FUZZ_PROFILE", "ci"))

TIME_LIMIT = float(os.environ.get("JOINT_FUZZ_TIME", "20"))      # seconds per example
MEMORY_LIMIT = int(os.environ.get("JOINT_FUZZ_MEMORY_MB", "600")) << 20   # peak RSS growth per example

STATS: Dict[str, Dict[str, float]] = defaultdict(lambda: {"examples": 0, "named errors": 0, "max_s": 0.0,
                                                          "max_mb": 0.0})


def named_error(parser: str) -> None:
    """Count an example of ``parser`` that ended in a named error (the rest gave a result)."""
    STATS[parser]["named errors"] += 1


class ExampleTimeout(Exception):
    """An example ran past TIME_LIMIT: a hang."""


def _rss() -> int:
    if psutil is None:  # pragma: no cover
        return 0
    return psutil.Process().memory_info().rss


@contextlib.contextmanager
def bounded(parser: str, limit: float = TIME_LIMIT) -> Iterator[None]:
    """Run one example of ``parser`` under the time limit; record its time and peak memory, and
    fail it when it grows the process by more than MEMORY_LIMIT."""
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.005):
            peak[0] = max(peak[0], _rss())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def on_alarm(signum, frame):
        raise ExampleTimeout(f"{parser}: one example ran longer than {limit:.0f} s (a hang)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        stop.set()
        watcher.join()
        peak[0] = max(peak[0], _rss())
        s = STATS[parser]
        s["examples"] += 1
        s["max_s"] = max(s["max_s"], time.perf_counter() - t0)
        s["max_mb"] = max(s["max_mb"], (peak[0] - base) / 2**20)
    grown = peak[0] - base
    assert grown <= MEMORY_LIMIT, f"{parser}: one example grew the process by {grown / 2**20:.0f} MB"


def summary_lines() -> list:
    if not STATS:
        return []
    lines = [f"fuzz ({settings.default.max_examples} examples a property, profile "
             f"{os.environ.get('JOINT_FUZZ_PROFILE', 'ci')}): parser, examples, of them named errors, max seconds, "
             "max MB of memory growth"]
    for name, s in sorted(STATS.items()):
        lines.append(f"  {name:<28} {int(s['examples']):>6} {int(s['named errors']):>6} {s['max_s']:>9.3f} "
                     f"{s['max_mb']:>9.1f}")
    out = os.environ.get("JOINT_FUZZ_STATS")
    if out:
        with open(out, "w") as f:
            json.dump(STATS, f, indent=1)
    return lines
