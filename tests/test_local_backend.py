"""The local backend against the shared backend contract suite."""

from __future__ import annotations

import pytest
from backend_contract import BackendContract

pytestmark = pytest.mark.slow


class TestLocalBackend(BackendContract):
    @pytest.fixture
    def backend_conf(self) -> dict:
        return {"name": "local", "kind": "local", "max_parallel": 1, "environment": {"variables": {}}}
