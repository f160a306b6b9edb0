"""A media process's CPU time slice: its frames go before set-up work that shares its core.

Linux's scheduler (EEVDF, since 6.6) lets a task that is running keep the core until
its time slice is used (0.75 ms × (1 + log2 of the cores), 1.4 ms here), so a media
frame that arrives while a control process runs on the same core waits for the end
of that slice, whatever the two processes' ``nice``. Since Linux 6.12 a task of the
normal policy may ask for its own slice (``sched_setattr``'s ``sched_runtime``,
0.1-100 ms), and a task that wakes with a shorter slice than the running one's
preempts it ("wakeup-preempt short slices"; ``kernel/sched/syscalls.c``,
``__setscheduler_params``). Its share of the core is unchanged: that is still its
weight (``nice``).

Measured with ``callbridge bench --roles`` (100 calls arriving 20 a second; the
control process at ``nice`` 5 and the media process on one core), the media
process's added latency over the whole run, p99, was 2.5-3.3 ms each way in four
3-round sets with the kernel's slice, and 1.4-2.1 ms with a 0.1 ms slice (one set),
where the baseline relay's was 1.3-4.2 ms.

So a ``--role media`` process asks for :data:`DEFAULT_SLICE_US` at start
(``CALLBRIDGE_MEDIA_SLICE_US``; 0 leaves the kernel's). An older kernel accepts the
request and ignores it, and another system has no such call: :func:`request_slice`
then says the slice was not granted, and nothing else changes. Only the calling
thread (the event loop's) is changed; threads it starts later inherit it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_SLICE_US", "SliceResult", "current_slice_ns", "request_slice"]

#: The slice a media process asks for: the shortest the kernel allows.
DEFAULT_SLICE_US: Final = 100

# struct sched_attr (include/uapi/linux/sched/types.h): size, policy, flags, nice,
# priority, runtime, deadline, period, util_min, util_max.
_ATTR = struct.Struct("=IIQiIQQQII")
_SCHED_OTHER: Final = 0
_SCHED_BATCH: Final = 3
_MIN_SLICE_NS: Final = 100_000
_MAX_SLICE_NS: Final = 100_000_000
#: (sched_setattr, sched_getattr) by machine; other machines are not tried.
_SYSCALLS: Final = {"x86_64": (314, 315), "aarch64": (274, 275)}


@dataclass(frozen=True, slots=True)
class SliceResult:
    """What the kernel made of a request: ``granted`` when it reads the slice back."""

    granted: bool
    slice_ns: int | None
    reason: str


def _syscalls() -> tuple[int, int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return _SYSCALLS.get(platform.machine())


def _getattr(libc: ctypes.CDLL, number: int) -> tuple[int, ...] | None:
    buffer = ctypes.create_string_buffer(_ATTR.size)
    if libc.syscall(number, 0, buffer, _ATTR.size, 0) != 0:
        return None
    return _ATTR.unpack(buffer.raw)


def current_slice_ns() -> int | None:
    """The calling thread's slice in nanoseconds as the kernel reports it (its own, or the
    default one); None where the kernel reports none (before Linux 6.12) or has no call."""
    numbers = _syscalls()
    if numbers is None:
        return None
    attr = _getattr(ctypes.CDLL(None, use_errno=True), numbers[1])
    if attr is None or attr[5] == 0:
        return None
    return int(attr[5])


def request_slice(slice_us: int) -> SliceResult:
    """Ask for a ``slice_us`` slice for the calling thread, keeping its policy and nice.

    Only the normal and batch policies have a slice to set: a thread an operator put
    on another policy (``chrt``, systemd's ``CPUSchedulingPolicy=``) is left alone.
    """
    numbers = _syscalls()
    if numbers is None:
        return SliceResult(False, None, f"no sched_setattr on {sys.platform}/{platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    current = _getattr(libc, numbers[1])
    if current is None:
        return SliceResult(False, None, os.strerror(ctypes.get_errno()))
    policy, nice = current[1], current[3]
    if policy not in (_SCHED_OTHER, _SCHED_BATCH):
        return SliceResult(False, None, f"the thread's scheduling policy is {policy}")
    wanted = min(max(slice_us * 1000, _MIN_SLICE_NS), _MAX_SLICE_NS)  # as the kernel clamps
    attr = _ATTR.pack(_ATTR.size, policy, 0, nice, 0, wanted, 0, 0, 0, 0)
    if libc.syscall(numbers[0], 0, ctypes.create_string_buffer(attr, _ATTR.size), 0) != 0:
        return SliceResult(False, None, os.strerror(ctypes.get_errno()))
    now = current_slice_ns()
    if now != wanted:
        # Before 6.12 the kernel takes the call and keeps no slice (it reads back 0).
        return SliceResult(False, now, "the kernel keeps no per-task slice (Linux 6.12+)")
    return SliceResult(True, now, "granted")
