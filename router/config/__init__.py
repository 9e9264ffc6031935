"""Router configuration: the pydantic schema and the loader that names file and field on error."""

from router.config.loader import ConfigError, load_config, parse_config
from router.config.schema import Config

__all__ = ["Config", "ConfigError", "load_config", "parse_config"]
