"""Fixtures of the operations tests: the web app's (a fresh database, the
real Redis, users and tokens) and a real stack (the simulator, workers)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.conftest import ROOT
from tests.pipeline.conftest import Stack, admin_token, build_stack
from tests.web.conftest import app, client, redis_url, settings, token, user  # noqa: F401
from web.app import create_app

PIPELINE_TEMPLATES = ROOT / "tests/pipeline/templates"


@pytest.fixture(scope="module")
def ops_stack(sim: dict[str, Any], redis_url: str,  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # fmt: skip
    """A database with the simulator as node "sim", the shipped and the
    pipeline tests' templates, a queue of its own; workers started by tests."""
    stack = build_stack(sim, redis_url, tmp_path_factory.mktemp("ops"), [PIPELINE_TEMPLATES])
    try:
        yield stack
    finally:
        stack.stop_workers()
        stack.redis.close()


@pytest.fixture
def stack_app(ops_stack: Stack) -> Iterator[Flask]:
    """The web app on the stack's database and queue, metrics never cached."""
    flask_app = create_app(dataclasses.replace(ops_stack.settings, web_metrics_max_age=0),
                           {"TESTING": True})  # fmt: skip
    yield flask_app
    flask_app.extensions["provisioner"].close()


@pytest.fixture
def stack_token(stack_app: Flask) -> str:
    return admin_token(stack_app.extensions["provisioner"].factory)


@pytest.fixture
def destroy_later(ops_stack: Stack) -> Iterator[Callable[[str], str]]:
    """Containers to remove from PVE after the test; the test's workers stop."""
    made: list[str] = []
    yield lambda cid: (made.append(cid), cid)[1]
    ops_stack.destroy_in_pve(made)
