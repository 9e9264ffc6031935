"""The Envoy ext_proc side: gRPC server, per-stream phase machine, wire helpers."""
