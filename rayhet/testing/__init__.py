"""Testing helpers: random-weight Llama models made on demand (GGUF for llama.cpp, HF for vLLM)."""
