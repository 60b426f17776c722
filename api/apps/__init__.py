"""GPT apps (OAuth clients): registry, per-app scopes and rate limits, usage stats, `setu apps`."""
