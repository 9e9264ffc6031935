"""OpenAI-compatible backend simulator for the demo, integration tests and benchmarks."""

from router.sim.backend import RunningBackend, running_backends, start_backend, start_backends, stop_backends
from router.sim.spec import SimBackendSpec, load_config, parse_backend_arg

__all__ = [
    "RunningBackend",
    "SimBackendSpec",
    "load_config",
    "parse_backend_arg",
    "running_backends",
    "start_backend",
    "start_backends",
    "stop_backends",
]
