"""The ML tier: one Ray Serve application (embeddings, generation, translation) behind an OpenAI-style API."""
