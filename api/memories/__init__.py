"""Per-user memory bank: what a GPT stores and recalls for one end user of one app."""
