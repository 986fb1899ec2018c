"""Sampling on llama.cpp: the sampler chain a request's parameters make, the grammar that response_format
asks for, and logprobs from a batch row's raw logits. Functions of the llama_cpp bindings (`lc`) and the
model's vocabulary, apart from the engine's step loop."""

from __future__ import annotations

import json

import numpy as np

from rayhet.engines.base import InvalidRequestError, SamplingParams


def response_grammar(lc, vocab, sp: SamplingParams) -> str | None:
    """The GBNF that response_format asks for, parsed once by llama.cpp here so that a schema it cannot take
    is a 400 naming response_format, not a failed step."""
    if sp.json_schema is None and not sp.json_object:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(sp.json_schema)) if sp.json_schema is not None else JSON_GBNF
    except Exception as e:  # noqa: BLE001 - the converter raises what it likes on schemas it cannot take
        raise InvalidRequestError(f"response_format: this JSON schema cannot be turned into a grammar "
                                  f"({type(e).__name__}: {e})", "response_format") from None
    probe = lc.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not probe:
        raise InvalidRequestError("response_format: llama.cpp could not parse the grammar of this JSON schema",
                                  "response_format")
    lc.llama_sampler_free(probe)
    return gbnf


def sampler_chain(lc, vocab, sp: SamplingParams, grammar: str | None, *, n_vocab: int, window: int,
                  default_seed: int | None):
    """A new llama.cpp sampler chain for one sequence (the caller frees it with llama_sampler_free)."""
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if grammar is not None:  # first: every later sampler sees only the tokens the grammar allows
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_grammar(vocab, grammar.encode(), b"root"))
    if sp.presence_penalty or sp.frequency_penalty:
        # first, on the raw logits (vLLM's order); over the tokens this sequence generated: the chain sees
        # only the tokens it sampled, never the prompt. A window of the whole context: OpenAI's has no limit.
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(
            n_vocab, window, 1.0, float(sp.frequency_penalty), float(sp.presence_penalty)))
    if sp.temperature == 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
    else:  # OpenAI/vLLM order: temperature, then top_p over the tempered distribution
        seed = sp.seed if sp.seed is not None else default_seed
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(sp.temperature))
        if sp.top_p < 1:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(sp.top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(
            lc.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF))
    return chain


def token_logprobs(logits: np.ndarray, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The log-softmax of one row of raw logits at `token`, and the k most likely tokens with theirs, most
    likely first."""
    m = float(logits.max())
    lse = m + float(np.log(np.exp(logits - m).sum()))
    if not k:
        return float(logits[token]) - lse, []
    best = np.argpartition(-logits, k - 1)[:k] if k < len(logits) else np.arange(len(logits))
    return float(logits[token]) - lse, [(t, float(logits[t]) - lse) for t in sorted(best.tolist(),
                                                                                  key=lambda t: -logits[t])]
