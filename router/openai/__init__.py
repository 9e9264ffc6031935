"""Typed OpenAI Chat Completions payloads, errors and SSE framing."""
