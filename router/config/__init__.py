"""Router configuration: the pydantic schema, the loader that names file and field on error, and the
reader of vLLM Semantic Router's canonical v0.3 layout (one internal model, two readers)."""

from router.config.loader import (
    ConfigError,
    load_config,
    parse_config,
    read_config,
    read_config_data,
)
from router.config.report import ConfigReport
from router.config.schema import Config

__all__ = ["Config", "ConfigError", "ConfigReport", "load_config", "parse_config", "read_config", "read_config_data"]
