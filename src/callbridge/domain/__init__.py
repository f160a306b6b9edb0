"""The domain: calls, phone numbers, the abuse policy, quotas, the words said on a call.
Pure: no I/O library (an import contract in ``pyproject.toml``)."""
