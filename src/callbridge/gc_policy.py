"""The garbage collector's policy for a serving process: few, short pauses while calls stream.

CPython's cyclic collector stops the event loop while it runs, and a full (generation 2)
collection scans every tracked object not frozen: with a few hundred calls up, that is
tens of milliseconds in which no media frame moves. Measured on one ``--role all``
process (``callbridge bench --calls 300 --arrival-rate 20 --duration 30``,
``gc.callbacks`` timing each collection):

- at start-up, before anything is frozen, five generation-2 collections of 20-160 ms
  each (imports, the app, the migrations), then the freeze's own collection;
- under load with the interpreter's default thresholds (700, 10, 10): ~725
  generation-0 collections (max 30 ms), 65 generation-1 (max 18 ms) and 5
  generation-2 collections (25-63 ms each) while the 300 calls came up and streamed:
  each full collection comes when the long-lived heap has grown by a quarter
  (CPython's rule), so they keep coming while calls are set up, longer each time.
- with :data:`THRESHOLDS`: 89 generation-0 collections (max 10-14 ms), 6
  generation-1 (max 1.4-3 ms), no generation-2.

So :func:`apply_serving_policy`, called once the process has started:

1. collects once and freezes what start-up built (``gc.freeze``): the modules, the
   app, the container live as long as the process and are never scanned again;
2. raises the thresholds to :data:`THRESHOLDS`. A young collection then runs after
   10 000 net allocations instead of 700: a call's short-lived objects (requests,
   SQL rows, frames) mostly die before it, so fewer of them are promoted and the
   older generations fill, and are collected, far less often. A young collection
   scans more objects each time (1.1-1.4 ms on average here, against ~1 ms at 700,
   the maxima above measured on a shared, saturated core), and cyclic garbage waits
   a little longer to be freed, which costs a little memory and nothing else
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
