"""Suite-wide hooks. Fixtures live in tests/unit/conftest.py and tests/integration/conftest.py."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ needs the testbed: mark it, so `-m "not testbed"` works."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.testbed)
