"""Quota stores: in process (:class:`MemoryQuotaStore`) or shared (:class:`RedisQuotaStore`)."""

from callbridge.adapters.quota.memory import MemoryQuotaStore
from callbridge.adapters.quota.port import QuotaStore
from callbridge.adapters.quota.redis import RedisQuotaStore

__all__ = ["MemoryQuotaStore", "QuotaStore", "RedisQuotaStore"]
