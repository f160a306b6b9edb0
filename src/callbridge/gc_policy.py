"""The garbage collector's policy for a serving process: few, short pauses while calls stream.

CPython's cyclic collector stops the event loop while it runs, and a full (generation 2)
collection scans every tracked object not frozen: with a few hundred calls up, that is
tens of milliseconds in which no media frame moves. Measured on one ``--role all``
process (``callbridge bench``, 100 and 300 calls arriving 20 a second, ``gc.callbacks``
timing each collection):

- at start-up, before anything is frozen, five generation-2 collections of 20-160 ms
  each (imports, the app, the migrations);
- under load with the interpreter's default thresholds (700, 10, 10): about 9.5
  generation-0 and 0.85 generation-1 collections per call set-up, and generation-2
  collections while calls come up, each longer as more calls are up (13-106 ms in the
  issue's runs), because the long-lived heap grows by more than a quarter between
  them (CPython's rule for when a full collection is due).

So :func:`apply_serving_policy`, called once the process has started:

1. collects once and freezes what start-up built (``gc.freeze``): the modules, the
   app, the container live as long as the process and are never scanned again;
2. raises the thresholds to :data:`THRESHOLDS`. A young collection then runs after
   10 000 net allocations instead of 700: a call's short-lived objects (requests,
   SQL rows, frames) mostly die before it, so fewer of them are promoted and the
   older generations fill, and are collected, far less often. A young collection
   still scans at most ~10 000 objects (well under a millisecond), and cyclic garbage
   waits a little longer to be freed, which costs a little memory and nothing else
   (objects without cycles are freed by reference counting as before).

Generation-2 collections are not turned off: cycles a call leaves behind must still be
freed in a process that runs for weeks.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["THRESHOLDS", "apply_serving_policy"]

#: ``gc.set_threshold`` for a serving process: (generation 0, 1, 2).
THRESHOLDS: Final = (10_000, 20, 20)


def apply_serving_policy() -> None:
    """Freeze what start-up built and set the serving thresholds (see the module)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
