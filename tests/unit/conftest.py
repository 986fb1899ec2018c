"""Fixtures for the engine and test-model tests: the tiny random-weight GGUF and engines on it."""

from __future__ import annotations

import pytest
import pytest_asyncio

from rayhet.testing.models import write_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", "tiny", seed=0)


@pytest_asyncio.fixture
async def engine_factory(tiny_gguf):
    """An async factory of started engines on the tiny model (settings overridable), shut down after."""
    from rayhet.engines.llama_cpp import LlamaCppEngine, LlamaCppSettings

    made = []

    async def make(**overrides):
        settings = LlamaCppSettings(**{"model_path": str(tiny_gguf), "n_ctx": 512, "n_slots": 8,
                                       "n_threads": 1, **overrides})
        engine = LlamaCppEngine(settings)
        await engine.start()
        made.append(engine)
        return engine

    yield make
    for e in made:
        await e.shutdown()


@pytest_asyncio.fixture
async def engine(engine_factory):
    return await engine_factory()
