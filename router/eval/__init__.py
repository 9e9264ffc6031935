"""`fusion-router eval`: a quality harness for solo models, Fusion and the other loopers on any OpenAI endpoint."""
