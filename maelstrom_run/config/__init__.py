"""Config schemas, validation and resolvers."""

from .validate import ConfigError, validate

__all__ = ["ConfigError", "validate"]
