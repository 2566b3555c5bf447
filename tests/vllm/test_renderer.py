"""Zip2ZipRenderer: text, chat and token-id prompts of z2z models, checked before the engine."""

from __future__ import annotations

import asyncio

import pytest

from tests.vllm.helpers import repeated_words

vllm = pytest.importorskip("vllm")

from vllm.config import ModelConfig, VllmConfig  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402
from vllm.renderers.params import ChatParams, TokenizeParams  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.v1.engine.input_processor import InputProcessor  # noqa: E402

from z2z_vllm.vllm.renderer import Zip2ZipRenderer  # noqa: E402
from z2z_vllm.vllm.tokenizer import Zip2ZipTokenizer  # noqa: E402

V, C = 48, 24
MAX_MODEL_LEN = 256
CHAT_TEMPLATE = "{% for message in messages %}<s> {{ message['content'] }} {% endfor %}"
TEXT = repeated_words([1, 2, 3, 4], 8)


@pytest.fixture(scope="module")
def vllm_config(tiny_export) -> VllmConfig:
    # The base architecture stands in for the z2z one, so that no engine or model class is
    # needed here; the vocabulary size (V + C) is the export's.
    model_config = ModelConfig(
        model=str(tiny_export),
        hf_overrides={"architectures": ["LlamaForCausalLM"]},
        max_model_len=MAX_MODEL_LEN,
        dtype="float32",
        skip_tokenizer_init=True,
    )
    return VllmConfig(model_config=model_config)


@pytest.fixture(scope="module")
def tokenizer(tiny_export) -> Zip2ZipTokenizer:
    # vLLM loads tokenizers of generating models with truncation_side="left".
    return Zip2ZipTokenizer.from_pretrained(tiny_export, truncation_side="left")


@pytest.fixture(scope="module")
def renderer(vllm_config, tokenizer) -> Zip2ZipRenderer:
    return Zip2ZipRenderer(vllm_config, tokenizer)


def prompt_ids(engine_inputs: list) -> list[int]:
    (engine_input,) = engine_inputs
    return engine_input["prompt_token_ids"]


def test_text_prompts_are_compressed(renderer, tokenizer):
    ids = prompt_ids(renderer.render_cmpl([{"prompt": TEXT}]))
    assert ids == tokenizer.encode(TEXT)
    assert len(ids) < len(tokenizer.base.encode(TEXT))
    assert renderer.get_tokenizer() is not tokenizer  # HfRenderer works on a copy...
    assert type(tokenizer.base).__name__.startswith("Cached")  # ...so ours is not wrapped


def test_token_id_prompts_pass_through(renderer, tokenizer):
    ids = tokenizer.encode(TEXT)
    assert prompt_ids(renderer.render_cmpl([{"prompt_token_ids": ids}])) == ids
    renderer.validate_token_ids(ids)


def test_chat_messages_render_with_the_base_template_then_compress(renderer, tokenizer):
    messages = [{"role": "user", "content": TEXT}]
    conversations, engine_inputs = renderer.render_chat([messages], ChatParams(chat_template=CHAT_TEMPLATE))
    ids = prompt_ids(engine_inputs)
    assert conversations == [messages]
    assert ids == tokenizer.encode(f"<s> {TEXT} ", add_special_tokens=False)
    assert ids[0] == 0 and max(ids) >= V
    assert tokenizer.decode(ids) == f"<s> {TEXT}"


def test_async_rendering_gives_the_same_ids(renderer, tokenizer):
    engine_inputs = asyncio.run(renderer.render_cmpl_async([{"prompt": TEXT}]))
    assert prompt_ids(engine_inputs) == tokenizer.encode(TEXT)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([1, 2, 60, 3], "id 60 at position 2 is not a defined hypertoken"),
        ([48, 1], "id 48 at position 0 is not a defined hypertoken"),
        ([1, 2, V + C], f"id {V + C} at position 2 is out of range"),
        ([1, -1], "id -1 at position 1 is negative"),
    ],
)
def test_invalid_compressed_prompts_are_refused_with_id_and_position(renderer, ids, message):
    with pytest.raises(VLLMValidationError, match=message) as refused:
        renderer.validate_token_ids(ids, parameter="prompt_token_ids")
    assert refused.value.parameter == "prompt_token_ids"


def test_self_defining_hypertoken_is_a_valid_prompt_id(renderer, tokenizer):
    decoder = tokenizer.codec.decoder()
    decoder.feed([5, 6])
    kwkwk_id, expansion = decoder.candidate
    assert kwkwk_id == V + decoder.num_entries and expansion == (6, 6)
    renderer.validate_token_ids([5, 6, kwkwk_id])


def test_input_processor_refuses_invalid_prompts_before_the_engine(vllm_config, renderer, tokenizer):
    processor = InputProcessor(vllm_config, renderer)
    params = SamplingParams(max_tokens=4)
    (valid,) = renderer.render_cmpl([{"prompt": TEXT}])
    request = processor.process_inputs("valid", valid, params, supported_tasks=("generate",))
    assert request.prompt_token_ids == tokenizer.encode(TEXT)
    (invalid,) = renderer.render_cmpl([{"prompt_token_ids": [1, 2, 60]}])
    with pytest.raises(VLLMValidationError, match="id 60 at position 2"):
        processor.process_inputs("invalid", invalid, params, supported_tasks=("generate",))


@pytest.mark.parametrize("side", [None, "left"])  # None: the tokenizer's side, while encoding
def test_left_truncation_keeps_a_valid_stream(renderer, tokenizer, side):
    params = TokenizeParams(max_total_tokens=MAX_MODEL_LEN, truncate_prompt_tokens=5, truncation_side=side)
    from_text = prompt_ids(renderer.render_cmpl([{"prompt": TEXT}], params))
    from_ids = prompt_ids(renderer.render_cmpl([{"prompt_token_ids": tokenizer.encode(TEXT)}], params))
    assert from_text == from_ids == tokenizer.truncate(tokenizer.encode(TEXT), max_length=5, side="left")
    assert len(from_text) <= 5
    assert TEXT.endswith(tokenizer.decode(from_text))  # decodes alone: no cut definitions
    assert len(tokenizer.decode(from_text).split()) > 5  # and still compressed


def test_right_truncation_keeps_the_first_ids(renderer, tokenizer):
    params = TokenizeParams(max_total_tokens=MAX_MODEL_LEN, truncate_prompt_tokens=5, truncation_side="right")
    ids = tokenizer.encode(TEXT)
    assert prompt_ids(renderer.render_cmpl([{"prompt_token_ids": ids}], params)) == ids[:5]


def test_truncating_an_invalid_prompt_is_refused(renderer):
    params = TokenizeParams(max_total_tokens=MAX_MODEL_LEN, truncate_prompt_tokens=3, truncation_side="left")
    with pytest.raises(VLLMValidationError, match="id 60 at position 2"):
        renderer.render_cmpl([{"prompt_token_ids": [1, 2, 60, 3, 4, 5]}], params)


def test_text_beyond_the_base_character_bound_is_refused_before_tokenizing(renderer, tokenizer):
    # vLLM's bound for a plain model: max_model_len times the longest base token's characters.
    bound = MAX_MODEL_LEN * tokenizer.max_chars_per_token
    text = " ".join(f"t{(i * i) % 47 + 1}" for i in range(bound // 3 + 1))[: bound + 1]
    with pytest.raises(VLLMValidationError, match=f"contains {bound + 1} characters"):
        renderer.render_cmpl([{"prompt": text}], TokenizeParams(max_total_tokens=MAX_MODEL_LEN))


def test_needs_a_z2z_tokenizer(vllm_config, tokenizer):
    with pytest.raises(TypeError, match="Zip2ZipTokenizer"):
        Zip2ZipRenderer(vllm_config, tokenizer.base)
