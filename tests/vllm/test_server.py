"""``vllm serve`` on a tiny z2z model, without and with n-gram speculative decoding: the
documented command, given the model's registered name in an empty folder, starts the OpenAI
server on 127.0.0.1 only; streamed text equals offline text (an engine without speculation), bad
prompt ids get HTTP 400 while the server keeps serving, and 200 concurrent completions all come
back with text that is the codec's expansion of their ids."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.vllm.helpers import VLLM_TEST_ENV, answers_beside_loopback, make_llm, repeated_words

vllm = pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")

from z2z_vllm.model_names import register_model  # noqa: E402
from z2z_vllm.modeling.config import Zip2ZipConfig  # noqa: E402

MAX_TOKENS = 16
LOAD_REQUESTS = 200
# The tiny word-level tokenizer has no chat template of its own.
CHAT_TEMPLATE = "{% for message in messages %}<s> {{ message['content'] }} {% endfor %}"
# The tiny export is served by this name (registered in the session's Hugging Face cache).
MODEL_NAME = "z2z-tiny-served"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SPECULATIVE = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 3}


@pytest.fixture(scope="module", params=["plain", "speculative"])
def server(request, tiny_export, tmp_path_factory):
    """``vllm serve NAME --host 127.0.0.1`` (the console script next to this Python) from an empty
    folder, network off, engine in its own process; yields the URL. Every test runs twice: as
    served plainly and with n-gram speculative decoding (``--speculative-config``)."""
    register_model(tiny_export, MODEL_NAME)
    empty = tmp_path_factory.mktemp("empty")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, **VLLM_TEST_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    command = [
        str(Path(sys.executable).parent / "vllm"), "serve", MODEL_NAME, "--host", "127.0.0.1",
        "--port", str(port), "--dtype", "float32", "--enforce-eager",
        "--max-model-len", "256", "--max-num-seqs", "32", "--seed", "0", "--chat-template", CHAT_TEMPLATE,
        *(["--speculative-config", json.dumps(SPECULATIVE)] if request.param == "speculative" else []),
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=empty)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def complete(url: str, **body) -> httpx.Response:
    """A greedy completion request."""
    body = {"model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0.0, **body}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=120)


def test_the_server_serves_the_name_on_loopback_only(server):
    assert [model["id"] for model in httpx.get(f"{server}/v1/models", timeout=10).json()["data"]] == [MODEL_NAME]
    assert not answers_beside_loopback(int(server.rsplit(":", 1)[1]))


def test_streamed_text_equals_offline_text(server, tiny_export):
    prompt = repeated_words([3, 4, 5, 3], 6)
    whole = complete(server, prompt=prompt).json()["choices"][0]["text"]
    chunks = []
    with httpx.stream(
        "POST",
        f"{server}/v1/completions",
        json={"model": MODEL_NAME, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.0, "stream": True},
        timeout=120,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.extend(choice["text"] for choice in json.loads(line[6:])["choices"])
    assert len(chunks) > 1 and "".join(chunks) == whole

    llm = make_llm(tiny_export)
    try:
        offline = llm.generate([prompt], vllm.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0), use_tqdm=False)
        assert offline[0].outputs[0].text == whole
    finally:
        llm.llm_engine.engine_core.shutdown()


def test_bad_prompt_ids_get_400_and_the_server_keeps_serving(server, tiny_export):
    V = Zip2ZipConfig.load(tiny_export).initial_vocab_size
    for bad in ([1, 2, V + 5], [1, -3], [1, V + 10_000]):
        response = complete(server, prompt=bad)
        assert response.status_code == 400, response.text
    assert complete(server, prompt=[1, 2, 1, 2, V]).status_code == 200  # V: entry 0 = (1, 2)


def test_200_concurrent_completions_expand_to_their_text(server, tiny_export):
    from transformers import AutoTokenizer

    codec = Zip2ZipConfig.load(tiny_export).codec()
    base = AutoTokenizer.from_pretrained(str(tiny_export))
    prompts = [repeated_words([1 + i % 40, 2 + i % 37, 1 + i % 40], 3 + i % 5) for i in range(LOAD_REQUESTS)]

    async def one(client: httpx.AsyncClient, prompt: str) -> dict:
        body = {
            "model": MODEL_NAME, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.8, "seed": len(prompt),
            "return_token_ids": True,
        }  # fmt: skip
        response = await client.post("/v1/completions", json=body)
        response.raise_for_status()
        data = response.json()
        return {"prompt_ids": data["choices"][0]["prompt_token_ids"] or data.get("prompt_token_ids"), **data["choices"][0]}

    async def all_requests() -> list[dict]:
        limits = httpx.Limits(max_connections=LOAD_REQUESTS)
        async with httpx.AsyncClient(base_url=server, timeout=300, limits=limits) as client:
            return await asyncio.gather(*(one(client, p) for p in prompts))

    results = asyncio.run(all_requests())
    assert len(results) == LOAD_REQUESTS
    for result in results:
        decoder = codec.decoder()
        prompt_base = decoder.decode(result["prompt_ids"])
        output_base = decoder.decode(result["token_ids"])
        prompt_text = base.decode(prompt_base, skip_special_tokens=True)
        full_text = base.decode(prompt_base + output_base, skip_special_tokens=True)
        assert full_text[len(prompt_text) :] == result["text"]
    assert any(t >= codec.initial_vocab_size for r in results for t in r["token_ids"])


def test_chat_completions_use_the_chat_template_and_compress_it(server, codec):
    content = repeated_words([4, 5, 6], 5)
    body = {
        "model": MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0.0,
        "messages": [{"role": "user", "content": content}],
    }  # fmt: skip
    response = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    # "<s>" then the 15 words: the prompt the model read is the compressed rendering.
    rendered = codec.encode([0] + [4, 5, 6] * 5)
    assert response.json()["usage"]["prompt_tokens"] == len(rendered) < 16
    completion = complete(server, prompt=rendered).json()["choices"][0]["text"]
    assert response.json()["choices"][0]["message"]["content"] == completion
