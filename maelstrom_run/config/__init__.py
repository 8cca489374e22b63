"""Config schemas (one dataclass per group, per backend kind), validation with the checks other
packages register, composition, resolvers, secrets, the label taxonomy. Imports only core."""

from .validate import validate

__all__ = ["validate"]
