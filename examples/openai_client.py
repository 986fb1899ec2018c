"""Query a running rayhet app with the official `openai` client (pip install openai).

    python examples/openai_client.py                                   # http://localhost:8000/v1
    RAYHET_URL=https://my-service.anyscale.app/v1 RAYHET_API_KEY=... python examples/openai_client.py

rayhet speaks the OpenAI API (/v1/models, /v1/chat/completions, /v1/completions, streaming too). The API key
is a rayhet key (server.api_keys / api_keys_env), or an Anyscale service's bearer token; any string when the
app has no keys.
"""

from __future__ import annotations

import os

from openai import OpenAI


def main() -> None:
    client = OpenAI(base_url=os.environ.get("RAYHET_URL", "http://localhost:8000/v1"),
                    api_key=os.environ.get("RAYHET_API_KEY", "none"), timeout=120, max_retries=2)
    model = client.models.list().data[0].id
    print("model:", model)

    chat = client.chat.completions.create(
        model=model, max_tokens=32, messages=[{"role": "user", "content": "Name three uses of a Ray cluster."}])
    print("chat:", repr(chat.choices[0].message.content), chat.usage)

    print("stream: ", end="", flush=True)
    stream = client.chat.completions.create(
        model=model, max_tokens=32, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count to five."}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage and not chunk.choices:  # the last chunk: usage only
            print("\nusage:", chunk.usage)

    # A long request (big max_tokens) and a short one may go to different pools: rayhet routes by size.
    done = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16)
    print("completion:", repr(done.choices[0].text), done.usage)


if __name__ == "__main__":
    main()
