"""Test models: GGUF and HF twins hold the same weights and vocabulary; the cached default is race-safe."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from rayhet.testing import models
from rayhet.testing.models import (
    CHAT_TEMPLATE, SIZES, build_vocab, hf_tokenizer, prompt_of_tokens, random_weights, write_gguf, write_hf,
)

TEXTS = ["hello world", "The quick brown fox's tail", "  spaces  and\ttabs\n\nnewlines ", "unicode: é ü 中文 🙂",
         "<|im_start|>user\nhi<|im_end|>\n", "numbers 12345 and punctuation!?", "", " a a a", "a"]


@pytest.fixture(scope="module")
def vocab_only(tiny_gguf):
    from llama_cpp import Llama

    return Llama(str(tiny_gguf), vocab_only=True, verbose=False)


def test_tiny_is_small_fast_and_deterministic(tmp_path, tiny_gguf):
    again = write_gguf(tmp_path / "again.gguf", "tiny", seed=0)
    assert again.stat().st_size < 5 * 2**20
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert digest(again) == digest(tiny_gguf)
    assert digest(write_gguf(tmp_path / "other.gguf", "tiny", seed=1)) != digest(tiny_gguf)


def test_sizes_have_the_parameter_counts_they_claim():
    assert SIZES["tiny"].n_params() < 1_000_000
    assert 110e6 < SIZES["120m"].n_params() < 140e6
    assert 1.0e9 < SIZES["1b"].n_params() < 1.4e9
    assert 6.7e9 < SIZES["7b"].n_params() < 6.8e9  # Llama 2 7B: 6.74 B
    w = random_weights("tiny")
    assert sum(a.size for a in w.values()) == SIZES["tiny"].n_params()


def test_vocab_layout():
    tokens, merges = build_vocab(512)
    assert len(tokens) == 512 == len(set(tokens))
    assert tokens[-4:] == list(models.SPECIAL_TOKENS)
    assert merges[0] == ("Ġ", "a")


def test_gguf_metadata_has_chat_template_and_specials(vocab_only):
    meta = vocab_only.metadata
    assert meta["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert int(meta["tokenizer.ggml.bos_token_id"]) == 508 and int(meta["tokenizer.ggml.eos_token_id"]) == 509


def test_hf_tokenizer_matches_llama_cpp(vocab_only):
    hf = hf_tokenizer(512)
    for text in TEXTS:
        ours = vocab_only.tokenize(text.encode(), add_bos=True, special=True)
        assert hf.encode(text).ids == ours, text
        assert hf.decode(ours[1:], skip_special_tokens=False) == text
    for n in (1, 5, 64):
        assert len(hf.encode(prompt_of_tokens(n)).ids) == n


def test_hf_folder_is_a_standard_llama(tmp_path):
    from safetensors.numpy import load_file

    d = write_hf(tmp_path / "hf", "tiny", seed=0)
    config = json.loads((d / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 512
    tok_config = json.loads((d / "tokenizer_config.json").read_text())
    assert tok_config["chat_template"] == CHAT_TEMPLATE
    assert (d / "generation_config.json").exists() and (d / "tokenizer.json").exists()
    w = load_file(str(d / "model.safetensors"))
    ref = random_weights("tiny", seed=0)
    assert set(w) == set(ref)
    np.testing.assert_array_equal(w["lm_head.weight"], ref["lm_head.weight"].astype(np.float16))


def _hf_forward(w: dict[str, np.ndarray], s, ids: list[int]) -> np.ndarray:
    """Hugging Face Llama in numpy (rotate-half RoPE, GQA, SwiGLU): the logits of the last position."""
    norm = lambda x, g: x / np.sqrt((x * x).mean(-1, keepdims=True) + s.rms_norm_eps) * g
    hd, T = s.head_dim, len(ids)
    inv = s.rope_theta ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1)[:, None], np.concatenate([np.sin(ang)] * 2, -1)[:, None]
    rope = lambda x: x * cos + np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], -1) * sin
    x = w["model.embed_tokens.weight"][ids].astype(np.float64)
    for i in range(s.num_layers):
        p = f"model.layers.{i}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, s.num_heads, hd))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, s.num_kv_heads, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, s.num_kv_heads, hd)
        rep = s.num_heads // s.num_kv_heads
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", att, v).reshape(T, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return norm(x[-1], w["model.norm.weight"]) @ w["lm_head.weight"].T


def test_gguf_computes_what_the_hf_weights_define(tiny_gguf):
    """llama.cpp's logits on the GGUF equal a numpy HF-layout forward pass: same model in both formats."""
    from llama_cpp import Llama

    llm = Llama(str(tiny_gguf), n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    ids = llm.tokenize(b"the quick brown fox jumps", add_bos=True, special=True)
    llm.eval(ids)
    ours = np.asarray(llm.scores[len(ids) - 1])
    ref = _hf_forward(random_weights("tiny", seed=0), SIZES["tiny"], ids)
    assert ref.std() > 2  # logits are spread out (greedy is robust to rounding)
    np.testing.assert_allclose(ours, ref, atol=2e-2 * ref.std())
    assert int(ours.argmax()) == int(ref.argmax())


def test_default_model_path_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYHET_CACHE", str(tmp_path / "cache"))
    p = models.default_model_path()
    assert p.parent == tmp_path / "cache" and p.exists()
    mtime = p.stat().st_mtime_ns
    assert models.default_model_path() == p and p.stat().st_mtime_ns == mtime
    assert [f.name for f in p.parent.iterdir()] == [p.name]  # no temporary file left behind


def test_bad_sizes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown model size"):
        write_gguf(tmp_path / "x.gguf", "70b")
    with pytest.raises(ValueError, match="dtype"):
        write_gguf(tmp_path / "x.gguf", "tiny", dtype="q4")
    assert not os.path.exists(tmp_path / "x.gguf")
