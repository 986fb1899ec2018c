"""Models: Llama-architecture models with random weights that rayhet writes itself, as GGUF (llama.cpp) and
HF (vLLM). The embedded default serves one; tests and benchmarks use them (also as rayhet.testing.models).

Nothing is downloaded and nothing large is committed: a model is made from a shape and a seed. Both
formats hold the same weights and the same byte-level BPE vocabulary, so a prompt tokenizes alike in
llama.cpp and in Hugging Face `tokenizers`, and prompts of an exact token length are easy to build
(see `prompt_of_tokens`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np

FORMAT_VERSION = 2  # bump when the bytes written change, so cached models are remade

BOS, EOS, IM_START, IM_END = "<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (BOS, EOS, IM_START, IM_END)  # the last ids of the vocabulary, in this order

# ChatML with a leading BOS: the template carries BOS, so a rendered chat is tokenized without adding one.
# Given `tools`, it writes them as Hermes/Qwen 2.5 templates do (a system block with <tools>, calls in
# <tool_call> tags, results in <tool_response>): the `hermes` tool_call_parser reads such a model's calls.
# Without tools it renders as before (format 1).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{{ '\\n\\n' }}{% endif %}"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}{{ '\\n' }}</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "{% endif %}"
    "{% for message in messages %}"
    "{% if tools and loop.first and message['role'] == 'system' %}"
    "{% elif tools and message['role'] == 'assistant' and message.get('tool_calls') %}"
    "<|im_start|>assistant\n{{ message['content'] }}"
    "{% for tc in message['tool_calls'] %}<tool_call>\n"
    '{"name": "{{ tc[\'function\'][\'name\'] }}", "arguments": {{ tc[\'function\'][\'arguments\'] | tojson }}}'
    "{{ '\\n' }}</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif tools and message['role'] == 'tool' %}"
    "<|im_start|>user\n<tool_response>\n{{ message['content'] }}{{ '\\n' }}</tool_response><|im_end|>\n"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class LlamaShape:
    """The shape of a Llama model (the fields of a HF LlamaConfig that matter)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_position: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def n_params(self) -> int:
        d, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        layer = 2 * d * d + 2 * d * kv + 3 * d * self.intermediate_size + 2 * d
        return 2 * self.vocab_size * d + self.num_layers * layer + d


SIZES: dict[str, LlamaShape] = {
    # a few MB, made in well under a second: every test uses it
    "tiny": LlamaShape(vocab_size=512, hidden_size=64, intermediate_size=192, num_layers=2, num_heads=4,
                       num_kv_heads=2, max_position=4096),
    # ~125M parameters (benchmarks; made on demand)
    "120m": LlamaShape(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_layers=12,
                       num_heads=12, num_kv_heads=4, max_position=4096),
    # ~1.2B parameters, the shape of Llama 3.2 1B with a smaller vocabulary (benchmarks; made on demand)
    "1b": LlamaShape(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_layers=16,
                     num_heads=32, num_kv_heads=8, max_position=8192, rope_theta=500000.0),
    # ~6.7B parameters, Llama 2 7B's shape (the model of the shipped llama-2-7b profiles): issue 18's hybrid
    # pools on the GPU machine (benchmarks/gpu/make_model.py --size 7b: ~13.5 GB in f16, 27 GB of RAM to make)
    "7b": LlamaShape(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                     num_heads=32, num_kv_heads=32, max_position=4096),
}

Size = Union[str, LlamaShape]


def shape_of(size: Size) -> LlamaShape:
    if isinstance(size, LlamaShape):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; use one of {sorted(SIZES)} or a LlamaShape")
    return SIZES[size]


# ---------------------------------------------------------------- vocabulary


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (byte-level BPE), as in `tokenizers` and llama.cpp."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHARS = _bytes_to_unicode()
_SPACE = BYTE_CHARS[ord(" ")]  # "Ġ"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _merge_candidates() -> Iterator[tuple[str, str]]:
    """Merges in rank order: " x" first (so " a" is one token), then letter strings of growing length."""
    for x in _LETTERS:
        yield _SPACE, x
    for x in _LETTERS:
        for y in _LETTERS:
            yield x, y
    level = [_SPACE + x for x in _LETTERS] + [x + y for x in _LETTERS for y in _LETTERS]
    while True:
        nxt = []
        for t in level:
            for y in _LETTERS:
                yield t, y
                nxt.append(t + y)
        level = nxt


def build_vocab(vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Tokens (ids 0..255 are the bytes, then one token per merge, then SPECIAL_TOKENS) and the merges."""
    n_merges = vocab_size - 256 - len(SPECIAL_TOKENS)
    if n_merges < 26:
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS) + 26}, got {vocab_size}")
    tokens = [BYTE_CHARS[b] for b in range(256)]
    merges = []
    for a, b in _merge_candidates():
        if len(merges) == n_merges:
            break
        merges.append((a, b))
        tokens.append(a + b)
    return tokens + list(SPECIAL_TOKENS), merges


def special_ids(vocab_size: int) -> dict[str, int]:
    base = vocab_size - len(SPECIAL_TOKENS)
    return {tok: base + i for i, tok in enumerate(SPECIAL_TOKENS)}


def prompt_of_tokens(n: int) -> str:
    """A text prompt that tokenizes to exactly `n` tokens (BOS included) with this module's vocabulary."""
    if n < 1:
        raise ValueError(f"a prompt has at least 1 token (BOS), got n={n}")
    return " a" * (n - 1)  # " a" is a single merged token, and the pre-tokenizer splits at every space


# ---------------------------------------------------------------- weights


def random_weights(size: Size, seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 weights under Hugging Face LlamaForCausalLM names (the one source of both formats)."""
    s = shape_of(size)
    rng = np.random.default_rng(seed)
    d, kv, ff = s.hidden_size, s.num_kv_heads * s.head_dim, s.intermediate_size

    def lin(n_out: int, n_in: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in), dtype=np.float32) * np.float32(scale / np.sqrt(n_in)))

    w = {"model.embed_tokens.weight": rng.standard_normal((s.vocab_size, d), dtype=np.float32)}
    for i in range(s.num_layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = np.ones(d, np.float32)
        w[p + "self_attn.q_proj.weight"] = lin(d, d)
        w[p + "self_attn.k_proj.weight"] = lin(kv, d)
        w[p + "self_attn.v_proj.weight"] = lin(kv, d)
        w[p + "self_attn.o_proj.weight"] = lin(d, d, 0.5)
        w[p + "post_attention_layernorm.weight"] = np.ones(d, np.float32)
        w[p + "mlp.gate_proj.weight"] = lin(ff, d)
        w[p + "mlp.up_proj.weight"] = lin(ff, d)
        w[p + "mlp.down_proj.weight"] = lin(d, ff, 0.5)
    w["model.norm.weight"] = np.ones(d, np.float32)
    # Logits with a wide spread (std ~4): greedy choices then never hinge on float rounding, so batched
    # and single-sequence greedy runs agree exactly.
    w["lm_head.weight"] = lin(s.vocab_size, d, 4.0)
    return w


def _permute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's rotate-half q/k layout -> GGUF llama's interleaved pairs (as convert_hf_to_gguf.py does)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _gguf_tensors(w: dict[str, np.ndarray], s: LlamaShape) -> Iterator[tuple[str, np.ndarray]]:
    yield "token_embd.weight", w["model.embed_tokens.weight"]
    for i in range(s.num_layers):
        for hf, gg in _GGUF_NAMES.items():
            t = w[f"model.layers.{i}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                t = _permute_rope(t, s.num_heads)
            elif hf == "self_attn.k_proj":
                t = _permute_rope(t, s.num_kv_heads)
            yield f"blk.{i}.{gg}.weight", t
    yield "output_norm.weight", w["model.norm.weight"]
    yield "output.weight", w["lm_head.weight"]


# ---------------------------------------------------------------- writers


def _add_byte_fallback_vocab(wr, vocab_size: int) -> None:
    """A SentencePiece ("llama") vocabulary of <unk>, <s>, </s>, the 256 byte tokens and unused fillers, so
    every character falls back to its UTF-8 bytes and a space ('\u2581', 3 bytes) becomes 3 tokens: a text
    then has more tokens than bytes, as with real SPM models on text their vocabulary does not cover."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"<unused{i}>" for i in range(vocab_size - len(tokens))]
    t = gguf.TokenType
    types = [t.UNKNOWN, t.CONTROL, t.CONTROL] + [t.BYTE] * 256 + [t.UNUSED] * (vocab_size - 259)
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores([0.0] * vocab_size)
    wr.add_token_types(types)
    wr.add_unk_token_id(0)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)


def write_gguf(path: str | os.PathLike, size: Size = "tiny", seed: int = 0, dtype: str = "f32",
               vocab: str = "bpe") -> Path:
    """Write a llama GGUF (weights in f32, f16, bf16 or q8_0; norms stay f32) with vocab and chat template.

    `vocab`: "bpe", this module's byte-level BPE (every test model), or "byte_fallback", a SentencePiece
    vocabulary with byte tokens only (`_add_byte_fallback_vocab`; tokenizer edge cases)."""
    import gguf

    if vocab not in ("bpe", "byte_fallback"):
        raise ValueError(f"vocab must be 'bpe' or 'byte_fallback', got {vocab!r}")

    s, path = shape_of(size), Path(path)
    q = gguf.GGMLQuantizationType
    qtype = {"f32": None, "f16": q.F16, "bf16": q.BF16, "q8_0": q.Q8_0}
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    if dtype not in qtype:
        raise ValueError(f"dtype must be one of {sorted(qtype)}, got {dtype!r}")
    tokens, merges = build_vocab(s.vocab_size)
    ids = special_ids(s.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    wr = gguf.GGUFWriter(str(path), "llama")
    wr.add_name(f"rayhet-random-{size if isinstance(size, str) else 'custom'}")
    wr.add_context_length(s.max_position)
    wr.add_embedding_length(s.hidden_size)
    wr.add_block_count(s.num_layers)
    wr.add_feed_forward_length(s.intermediate_size)
    wr.add_head_count(s.num_heads)
    wr.add_head_count_kv(s.num_kv_heads)
    wr.add_rope_dimension_count(s.head_dim)
    wr.add_rope_freq_base(s.rope_theta)
    wr.add_layer_norm_rms_eps(s.rms_norm_eps)
    wr.add_vocab_size(s.vocab_size)
    wr.add_file_type(ftype[dtype])
    if vocab == "byte_fallback":
        _add_byte_fallback_vocab(wr, s.vocab_size)
    else:
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre("gpt-2")
        wr.add_token_list(tokens)
        types = [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIAL_TOKENS)) + [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS)
        wr.add_token_types(types)
        wr.add_token_merges([f"{a} {b}" for a, b in merges])
        wr.add_bos_token_id(ids[BOS])
        wr.add_eos_token_id(ids[EOS])
        wr.add_eot_token_id(ids[IM_END])
    wr.add_add_bos_token(True)
    wr.add_add_eos_token(False)
    wr.add_chat_template(CHAT_TEMPLATE)
    w = random_weights(s, seed)
    for name, t in _gguf_tensors(w, s):
        q = qtype[dtype] if t.ndim == 2 else None
        if q is None:
            wr.add_tensor(name, t)
        else:
            wr.add_tensor(name, gguf.quants.quantize(t, q), raw_dtype=q)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


def write_hf(directory: str | os.PathLike, size: Size = "tiny", seed: int = 0, dtype: str = "float16") -> Path:
    """Write a Hugging Face LlamaForCausalLM folder (config, safetensors, tokenizer, chat template)."""
    from safetensors.numpy import save_file

    s, d = shape_of(size), Path(directory)
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    d.mkdir(parents=True, exist_ok=True)
    ids = special_ids(s.vocab_size)
    w = {k: v.astype(dtype) for k, v in random_weights(s, seed).items()}
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": s.vocab_size, "hidden_size": s.hidden_size, "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.num_layers, "num_attention_heads": s.num_heads,
        "num_key_value_heads": s.num_kv_heads, "head_dim": s.head_dim,
        "max_position_embeddings": s.max_position, "rope_theta": s.rope_theta, "rms_norm_eps": s.rms_norm_eps,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "initializer_range": 0.02,
        "bos_token_id": ids[BOS], "eos_token_id": [ids[EOS], ids[IM_END]], "torch_dtype": dtype,
    }
    _write_json(d / "config.json", config)
    _write_json(d / "generation_config.json",
                {"bos_token_id": ids[BOS], "eos_token_id": [ids[EOS], ids[IM_END]]})
    hf_tokenizer(s.vocab_size).save(str(d / "tokenizer.json"))
    _write_json(d / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": IM_END, "pad_token": EOS,
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "model_max_length": s.max_position, "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(ids[t]): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                               "normalized": False, "single_word": False} for t in SPECIAL_TOKENS},
    })
    _write_json(d / "special_tokens_map.json", {"bos_token": BOS, "eos_token": IM_END, "pad_token": EOS})
    return d


def hf_tokenizer(vocab_size: int):
    """The `tokenizers.Tokenizer` twin of the GGUF vocabulary (byte-level BPE, GPT-2 split, BOS added)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens, merges = build_vocab(vocab_size)
    ids = special_ids(vocab_size)
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, ids[BOS])])
    return tok


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- cached default


def cache_dir() -> Path:
    """Where made models are kept: $RAYHET_CACHE, else ~/.cache/rayhet/models."""
    env = os.environ.get("RAYHET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rayhet" / "models"


def cached_gguf(size: Size = "tiny", seed: int = 0, dtype: str = "f32") -> Path:
    """A GGUF of this size under cache_dir(), made on first use (written aside, then renamed: race-safe)."""
    name = size if isinstance(size, str) else "shape-" + _shape_key(size)
    path = cache_dir() / f"rayhet-{name}-s{seed}-{dtype}-v{FORMAT_VERSION}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
        try:
            write_gguf(tmp, size, seed, dtype)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def default_model_path() -> Path:
    """The tiny random-weight GGUF the embedded default serves (made in well under a second, then cached)."""
    return cached_gguf("tiny")


def _shape_key(s: LlamaShape) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(asdict(s), sort_keys=True).encode()).hexdigest()[:10]
