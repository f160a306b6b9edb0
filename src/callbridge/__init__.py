"""callbridge: a self-hosted "call me" service."""

__version__ = "0.1.0"
