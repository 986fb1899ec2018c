# Sourced by the GPU steps: the carried bundle, the llama.cpp build, and the project itself on the path.
export PYTHONPATH="/tmp/site-llama:/tmp/site:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 VLLM_NO_USAGE_STATS=1
export RAYHET_CACHE=/tmp/rayhet-cache
export RAYHET_HF=/tmp/models/rayhet-1b-hf RAYHET_GGUF=/tmp/models/rayhet-1b-f16.gguf
