"""Config schemas, validation and resolvers."""

from ..core.errors import ConfigError
from .validate import validate

__all__ = ["ConfigError", "validate"]
