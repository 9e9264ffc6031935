"""Tenants: who a request is for (a trusted header Envoy sets, or an API key's sha256 digest mapped in
the config), which models and loopers that tenant may use, and its tokens-per-minute budget."""
