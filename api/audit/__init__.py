"""Audit trail: every token issued or refused and every `/api/v1` call, buffered and written in batches."""
