"""Cross-cutting pieces: settings, database, redis, errors, observability, embedded servers."""
