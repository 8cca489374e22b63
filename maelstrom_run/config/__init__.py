"""Config schemas (one dataclass per group, per backend kind), validation with the checks other
packages register, composition, resolvers, secrets, the label taxonomy. Imports only core."""

from ..core.errors import ConfigError
from .validate import validate

__all__ = ["ConfigError", "validate"]
