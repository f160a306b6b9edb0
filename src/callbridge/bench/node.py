"""The lean Node relay of ``callbridge bench --compare-node``: found, installed, started.

``benchmarks/node_relay/relay.mjs`` does what the baseline relay does, in Node with
the ``ws`` package pinned by its ``package.json`` and ``package-lock.json``. The
package is installed with ``npm ci`` into a cache directory outside the repository
(``$XDG_CACHE_HOME/callbridge/node-relay-<hash of the lock file>``, reused while the
lock file is unchanged), next to a copy of ``relay.mjs`` so that Node resolves
``ws`` from there. Benchmark tooling only: the CI suite does not need Node.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["DEFAULT_NODE_DIR", "NodeRelay", "NodeUnavailable"]

#: Where the relay's sources live in a source checkout (src/callbridge/bench/ → repo root).
DEFAULT_NODE_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "node_relay"
_FILES = ("package.json", "package-lock.json", "relay.mjs")


class NodeUnavailable(RuntimeError):  # noqa: N818 - reads as the sentence it carries
    """The Node relay cannot be run here (the message says why, in one sentence)."""


class NodeRelay:
    """A ready-to-run Node relay: ``ws`` installed in the cache, ``relay.mjs`` beside it."""

    def __init__(self, node: str, directory: Path) -> None:
        self.node = node
        self.directory = directory

    def argv(self) -> list[str]:
        """The command that starts the relay (``--port`` and ``--agent-url`` follow)."""
        return [self.node, str(self.directory / "relay.mjs")]

    @classmethod
    def prepare(cls, source: Path = DEFAULT_NODE_DIR, cache: Path | None = None) -> NodeRelay:
        """Install the relay's packages into the cache (once per lock file) and return it.

        Raises:
            NodeUnavailable: node or npm is missing, the sources are missing, or npm failed.
        """
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None:
            raise NodeUnavailable(
                "--compare-node needs node (v18 or later) and npm on the PATH, "
                "and this machine lacks " + ("node" if node is None else "npm") + "."
            )
        missing = [name for name in _FILES if not (source / name).is_file()]
        if missing:
            raise NodeUnavailable(
                f"--compare-node needs {', '.join(missing)} in {source} (a source checkout)."
            )
        lock = (source / "package-lock.json").read_bytes()
        root = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        target = root / "callbridge" / f"node-relay-{hashlib.sha256(lock).hexdigest()[:12]}"
        target.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            shutil.copyfile(source / name, target / name)
        if not (target / "node_modules" / "ws" / "package.json").is_file():
            done = subprocess.run(  # noqa: S603 - npm found on the PATH, fixed arguments
                [npm, "ci", "--prefix", str(target), "--no-audit", "--no-fund", "--omit=dev"],
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise NodeUnavailable(
                    f"npm ci could not install the Node relay's packages: {' '.join(tail)}"
                )
        return cls(node, target)
