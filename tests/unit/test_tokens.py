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
