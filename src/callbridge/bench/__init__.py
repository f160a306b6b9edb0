"""``callbridge bench``: how many calls one core carries, and how much latency the bridge adds.

Modules: :mod:`.wire` (stamped frames), :mod:`.probe` (per-call measurements),
:mod:`.callee` and :mod:`.twilio_flow` (Twilio's side), :mod:`.rest_peer` (the
Calls resource), :mod:`.agent_peer` (the agent's side), :mod:`.loadgen` (one run),
:mod:`.procs` (processes under test), :mod:`.report` (figures and tables),
:mod:`.runner` (the whole benchmark) and :mod:`.command` (the CLI).
"""

from callbridge.bench.command import bench_command

__all__ = ["bench_command"]
