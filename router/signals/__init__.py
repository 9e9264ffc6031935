"""Signals: facts computed about a request (keywords, context length, language, embeddings, safety)."""
