"""Engines: what a pool replica drives (the protocol in base.py; llama.cpp on CPUs, vLLM on GPUs).

Engine modules import their heavy libraries lazily, so importing this package costs nothing.
"""

from rayhet.engines.base import (
    Engine, EngineError, EngineOverloadedError, EngineStats, GenerationDelta, GenerationRequest,
    InvalidRequestError, SamplingParams, Usage,
)

__all__ = [
    "Engine", "EngineError", "EngineOverloadedError", "EngineStats", "GenerationDelta", "GenerationRequest",
    "InvalidRequestError", "SamplingParams", "Usage",
]
