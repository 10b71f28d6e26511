"""Configuration: YAML in, frozen typed models out, or every error explained."""

from .loader import default_config_path, load_config, load_config_text
from .models import Config, config_json_schema

__all__ = ["Config", "config_json_schema", "default_config_path", "load_config", "load_config_text"]
