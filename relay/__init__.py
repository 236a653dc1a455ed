"""relay: a single-process asyncio webhook relay with a durable SQLite outbox."""

__version__ = "0.1.0"
