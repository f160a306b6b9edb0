"""Quota stores: in process (:class:`MemoryQuotaStore`) or shared (:class:`RedisQuotaStore`)."""

from callbridge.adapters.quota.memory import MemoryQuotaStore
from callbridge.adapters.quota.redis import RedisQuotaStore
from callbridge.ports import QuotaStore

__all__ = ["MemoryQuotaStore", "QuotaStore", "RedisQuotaStore"]
