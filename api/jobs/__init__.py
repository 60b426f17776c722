"""Durable background work in PostgreSQL: enqueued in the caller's transaction, retried with backoff."""
