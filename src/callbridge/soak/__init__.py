"""``callbridge soak``: a day of real operation in one run (issue 11, part 7).

Modules: :mod:`.profile` (what a run does), :mod:`.processes` (PostgreSQL, Redis,
nginx, the sandbox and the servers), :mod:`.traffic` (the visitors), :mod:`.faults`
(kill -9, outages, recovery times), :mod:`.evidence` (what is read at the end),
:mod:`.invariants` (the verdicts), :mod:`.report` (the summary), :mod:`.runner` (one
run) and :mod:`.command` (the CLI).
"""

from callbridge.soak.command import soak_command

__all__ = ["soak_command"]
