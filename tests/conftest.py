"""Shared test fixtures.

`seed` / `rng` / `generator`: random inputs are drawn fresh on every run from a seed that is
printed with any failure; PNTK_TEST_SEED=N replays one.
"""
import os
import secrets

import numpy as np
import pytest
import torch


def _base_seed() -> int:
    return int(os.environ.get("PNTK_TEST_SEED") or secrets.randbits(31))


BASE_SEED = _base_seed()


@pytest.fixture
def seed(request) -> int:
    # One seed per test, derived from the run's base seed and the test id (stable under -k).
    value = (BASE_SEED + sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid))) % (2**31)
    request.node.pntk_seed = value
    return value


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture
def generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    seed = getattr(item, "pntk_seed", None)
    if report.failed and seed is not None:
        report.sections.append(
            ("random seed", f"test seed {seed}; replay the run with PNTK_TEST_SEED={BASE_SEED}")
        )


def pytest_report_header(config):
    return f"pntk random base seed: {BASE_SEED} (replay with PNTK_TEST_SEED={BASE_SEED})"
