"""The ingress's own GGUF tokenizer counts exactly what the llama.cpp engine feeds the model."""

from rayhet.serve.tokens import GGUFTokenizer

PROMPTS = ["Hello", "héllo wörld, 1 2 3 <|im_start|> tags", "a" * 300, ""]
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi there ünïcode"}]


async def test_gguf_tokenizer_matches_the_engine(tiny_gguf, engine):
    tok = GGUFTokenizer(str(tiny_gguf))
    for text in PROMPTS:
        assert tok.prompt_ids(text) == engine.tokenize(text), text
    assert tok.chat_ids(CHAT) == engine.tokenize(engine.render_chat(CHAT), add_bos=False)
    assert len(tok.chat_ids(CHAT)) > len(tok.prompt_ids("Hi there ünïcode"))  # the template adds its tokens
    for text in PROMPTS:  # a token-id prompt echoed: its text as the engine reads it back, BOS left out
        assert tok.text_of(tok.prompt_ids(text)) == engine.detokenize(tok.prompt_ids(text))
    assert tok.text_of(tok.prompt_ids(PROMPTS[1])) == PROMPTS[1].replace("<|im_start|>", "")
    # echo of a token-id prompt with ids outside the vocabulary (found by the conformance fuzzing: a 500): they
    # are left out of the text, and the engine refuses the request with a 400 naming the prompt
    ids = tok.prompt_ids("hello")
    assert tok.text_of([-1, *ids, 10**6]) == tok.text_of(ids)


MORE_TOKENS_THAN_BYTES = "hello world " * 10  # with byte fallback each space is '\u2581': 3 byte tokens


async def test_more_tokens_than_bytes_goes_through_engine_and_ingress(tmp_path):
    """A SentencePiece byte-fallback vocabulary gives more tokens than UTF-8 bytes; the buffer grows (issue 12, 4)."""
    from rayhet.engines.base import GenerationRequest, SamplingParams
    from rayhet.engines.llama_cpp import LlamaCppEngine, LlamaCppSettings
    from rayhet.testing.models import write_gguf

    path = write_gguf(tmp_path / "spm.gguf", "tiny", vocab="byte_fallback")
    engine = LlamaCppEngine(LlamaCppSettings(model_path=str(path), n_ctx=512, n_slots=2, n_threads=1))
    await engine.start()
    try:
        ids = engine.tokenize(MORE_TOKENS_THAN_BYTES)
        assert len(ids) > len(MORE_TOKENS_THAN_BYTES.encode()) + 8  # what the old fixed buffer could not hold
        assert GGUFTokenizer(str(path)).prompt_ids(MORE_TOKENS_THAN_BYTES) == ids
        req = GenerationRequest(request_id="r", prompt=MORE_TOKENS_THAN_BYTES,
                                sampling=SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
        deltas = [d async for d in engine.generate(req)]
        assert sum(len(d.token_ids) for d in deltas) == 4
        assert deltas[-1].usage.prompt_tokens == len(ids)
    finally:
        await engine.shutdown()
