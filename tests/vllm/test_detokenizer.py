"""Output text and logprob texts of z2z requests (Zip2ZipIncrementalDetokenizer and
Zip2ZipLogprobsProcessor), against vLLM's own detokenizer over the expanded base ids."""

from __future__ import annotations

import numpy as np
import pytest

from tests.vllm.helpers import repeated_words

vllm = pytest.importorskip("vllm")

from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.v1.engine import EngineCoreOutput, EngineCoreRequest  # noqa: E402
from vllm.v1.engine.detokenizer import (  # noqa: E402
    FastIncrementalDetokenizer,
    IncrementalDetokenizer,
)
from vllm.v1.engine.logprobs import LogprobsProcessor  # noqa: E402
from vllm.v1.outputs import LogprobsLists  # noqa: E402

from z2z_vllm.modeling.config import Zip2ZipConfig  # noqa: E402
from z2z_vllm.vllm.detokenizer import (  # noqa: E402
    Zip2ZipIncrementalDetokenizer,
    Zip2ZipLogprobsProcessor,
)
from z2z_vllm.vllm.tokenizer import Zip2ZipTokenizer  # noqa: E402

V = 48


@pytest.fixture(scope="module")
def tokenizer(tiny_export) -> Zip2ZipTokenizer:
    return Zip2ZipTokenizer.from_pretrained(tiny_export)


@pytest.fixture(scope="module")
def stream(tokenizer) -> tuple[list[int], list[int]]:
    """(prompt, outputs): compressed ids whose outputs use hypertokens defined by the prompt, by
    earlier outputs, and defining themselves (KwKwK)."""
    base_ids = tokenizer.base.encode(repeated_words([1, 2, 3], 3) + " " + repeated_words([7, 8, 9], 3))
    base_ids += [5] * 7 + [1, 2, 3] * 2
    ids = tokenizer.codec.encode(base_ids)
    prompt, outputs = ids[:6], ids[6:]
    decoder = tokenizer.codec.decoder()
    decoder.feed(prompt)
    defined_by_prompt = set(decoder.codebook)
    kinds = set()
    for token_id in outputs:
        candidate = decoder.candidate
        if candidate is not None and candidate[0] == token_id:
            kinds.add("kwkwk")
        elif token_id in defined_by_prompt:
            kinds.add("prompt")
        elif token_id >= V:
            kinds.add("outputs")
        decoder.feed([token_id])
    assert kinds == {"kwkwk", "prompt", "outputs"}
    return prompt, outputs


def request(prompt: list[int], **sampling: object) -> EngineCoreRequest:
    return EngineCoreRequest(
        request_id="request",
        prompt_token_ids=prompt,
        mm_features=None,
        sampling_params=SamplingParams(**sampling),
        pooling_params=None,
        arrival_time=0.0,
        lora_request=None,
        cache_salt=None,
        data_parallel_rank=None,
    )


def run(detokenizer, outputs: list[int]) -> tuple[str | None, list[str]]:
    """Feeds outputs one per step, as the output processor does; returns the stop string and
    the streamed deltas (the last one taken once finished)."""
    deltas, stop = [], None
    for token_id in outputs:
        stop = detokenizer.update([token_id], False)
        if stop is not None:
            break
        deltas.append(detokenizer.get_next_output_text(False, True))
    deltas.append(detokenizer.get_next_output_text(True, True))
    return stop, deltas


def base_run(tokenizer, prompt, outputs, **sampling) -> FastIncrementalDetokenizer:
    """What a plain model that emitted the same base ids gets from vLLM."""
    base_prompt = tokenizer.codec.decode(prompt)
    base_outputs = tokenizer.codec.decode(prompt + outputs)[len(base_prompt) :]
    detokenizer = FastIncrementalDetokenizer(tokenizer.base, request(base_prompt, **sampling))
    run(detokenizer, base_outputs)
    return detokenizer


def test_output_text_is_the_sequence_text_after_the_prompt(tokenizer, stream):
    prompt, outputs = stream
    detokenizer = Zip2ZipIncrementalDetokenizer(tokenizer, request(prompt))
    stop, deltas = run(detokenizer, outputs)
    assert stop is None
    assert tokenizer.decode(prompt) + detokenizer.output_text == tokenizer.decode(prompt + outputs)
    assert detokenizer.output_text == base_run(tokenizer, prompt, outputs).output_text
    assert "".join(deltas) == detokenizer.output_text
    assert detokenizer.output_token_ids == outputs  # compressed ids


def test_special_tokens_are_skipped_as_asked(tokenizer):
    words = repeated_words([1, 2, 3], 4)
    ids = tokenizer.codec.encode(tokenizer.base.encode(f"{words} <s> {words}"))
    prompt, outputs = ids[:4], ids[4:]
    assert 0 in outputs and max(outputs) >= V
    for skip in (True, False):
        detokenizer = Zip2ZipIncrementalDetokenizer(tokenizer, request(prompt, skip_special_tokens=skip))
        run(detokenizer, outputs)
        assert ("<s>" in detokenizer.output_text) is not skip
        expected = base_run(tokenizer, prompt, outputs, skip_special_tokens=skip).output_text
        assert detokenizer.output_text == expected


# "t5 t5 t5 t5 t5" ends inside the self-defining hypertoken "t5 t5 t5", "t8 t9 t7" inside the
# hypertoken "t7 t8" defined by earlier outputs.
@pytest.mark.parametrize("stop", ["t5 t5 t5 t5 t5", "t8 t9 t7"])
@pytest.mark.parametrize("include", [False, True])
def test_stop_strings_cut_inside_hypertokens_as_for_a_plain_model(tokenizer, stream, stop, include):
    prompt, outputs = stream
    sampling = dict(stop=[stop], include_stop_str_in_output=include)
    detokenizer = Zip2ZipIncrementalDetokenizer(tokenizer, request(prompt, **sampling))
    matched, deltas = run(detokenizer, outputs)
    full_text = tokenizer.decode(prompt + outputs)[len(tokenizer.decode(prompt)) :]
    stop_start = full_text.index(stop)
    assert matched == stop
    assert detokenizer.output_text == full_text[: stop_start + len(stop) if include else stop_start]
    assert detokenizer.output_text == base_run(tokenizer, prompt, outputs, **sampling).output_text
    assert "".join(deltas) == detokenizer.output_text
    # The kept tokens end with the one completing the stop string: its text overruns the stop.
    kept = detokenizer.output_token_ids
    assert kept == outputs[: len(kept)]
    assert len(tokenizer.decode(prompt + kept)) > len(tokenizer.decode(prompt)) + stop_start + len(stop)
    assert len(tokenizer.decode(prompt + kept[:-1])) < len(tokenizer.decode(prompt)) + stop_start + len(stop)


def test_min_tokens_counts_compressed_tokens(tokenizer, stream):
    prompt, outputs = stream
    # "t7" ends the first token, then the text of the 5th ("t9 t7").
    detokenizer = Zip2ZipIncrementalDetokenizer(tokenizer, request(prompt, stop=["t7"], min_tokens=4))
    matched, _ = run(detokenizer, outputs)
    assert matched == "t7"
    assert detokenizer.output_token_ids == outputs[:5]
    assert detokenizer.output_text == " t7 t8 t9 t7 t8 t9 "


def test_several_tokens_in_one_step_keep_only_those_up_to_the_stop(tokenizer, stream):
    prompt, outputs = stream
    detokenizer = Zip2ZipIncrementalDetokenizer(tokenizer, request(prompt, stop=["t8 t9 t7"]))
    assert detokenizer.update(outputs, False) == "t8 t9 t7"
    assert detokenizer.output_token_ids == outputs[:4]


def logprob_texts(processor, positions: list[list[int]]) -> list[dict[int, str]]:
    """Feeds one engine output per position (sampled id first); returns each position's texts."""
    for token_ids in positions:
        logprobs = -np.arange(1, len(token_ids) + 1, dtype=np.float32)
        new_logprobs = LogprobsLists(np.array([token_ids]), np.array([logprobs]), np.array([1]))
        processor.update_from_output(EngineCoreOutput("request", token_ids[:1], new_logprobs=new_logprobs))
    return [{token_id: logprob.decoded_token for token_id, logprob in position.items()} for position in processor.logprobs]


def test_logprob_texts_of_hypertokens_follow_the_request_codebook(tokenizer, stream):
    prompt, outputs = stream
    processor = Zip2ZipLogprobsProcessor.from_new_request(tokenizer, request(prompt, logprobs=2))
    undefined = V + 23
    # Each position: the sampled id, then an id for the self-defining hypertoken "t5 t5 t5"
    # (61: defined only once read) and an id never defined here.
    texts = logprob_texts(processor, [[token_id, 61, undefined] for token_id in outputs])
    sampled_texts = [position[token_id] for position, token_id in zip(texts, outputs)]
    assert "".join(" " + text for text in sampled_texts) == base_run(tokenizer, prompt, outputs).output_text
    position_of_61 = outputs.index(61)
    assert sampled_texts[position_of_61] == "t5 t5 t5"
    assert [position[61] for position in texts[:position_of_61]] == [""] * position_of_61  # not yet
    assert texts[position_of_61 + 1][61] == "t5 t5 t5"  # now defined
    assert all(position[undefined] == "" for position in texts)
    assert processor.cumulative_logprob == pytest.approx(-1.0 * len(outputs))


def test_logprob_text_of_the_self_defining_id(tokenizer):
    processor = Zip2ZipLogprobsProcessor.from_new_request(tokenizer, request([5, 6], logprobs=1))
    (texts,) = logprob_texts(processor, [[V + 1, 6]])  # KwKwK after "t5 t6": "t6 t6"
    assert texts == {V + 1: "t6 t6", 6: "t6"}


@pytest.fixture(scope="module")
def byte_tokenizer() -> Zip2ZipTokenizer:
    """A byte-level tokenizer without merges (one base id per byte, as byte-level BPE splits
    rare characters): hypertokens begin and end inside UTF-8 characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={symbol: i for i, symbol in enumerate(byte_symbols)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    config = Zip2ZipConfig(initial_vocab_size=len(byte_symbols), max_codebook_size=32, max_subtokens=3)
    return Zip2ZipTokenizer(PreTrainedTokenizerFast(tokenizer_object=backend), config)


def test_multibyte_characters_split_across_hypertokens(byte_tokenizer):
    text = "ça né é ça né é 日本 日本 日本"
    ids = byte_tokenizer.encode(text)
    prompt, outputs = ids[:3], ids[3:]
    detokenizer = Zip2ZipIncrementalDetokenizer(byte_tokenizer, request(prompt))
    run(detokenizer, outputs)
    assert byte_tokenizer.decode(prompt) + detokenizer.output_text == text
    assert detokenizer.output_text == base_run(byte_tokenizer, prompt, outputs).output_text

    processor = Zip2ZipLogprobsProcessor.from_new_request(byte_tokenizer, request(prompt, logprobs=0))
    texts = logprob_texts(processor, [[token_id] for token_id in outputs])
    sampled_texts = [position[token_id] for position, token_id in zip(texts, outputs)]
    # A character's bytes show with the token that completes it, so the texts add up.
    assert "".join(sampled_texts) == detokenizer.output_text
    assert "" in sampled_texts and "本" in sampled_texts  # split characters
    assert not any("\ufffd" in text for text in sampled_texts)


def test_patches_build_z2z_classes_only_for_z2z_tokenizers(tokenizer, stream):
    from z2z_vllm.vllm import patches

    patches.apply()
    prompt, _ = stream
    z2z_request = request(prompt, logprobs=1)
    assert type(IncrementalDetokenizer.from_new_request(tokenizer, z2z_request)) is Zip2ZipIncrementalDetokenizer
    assert type(LogprobsProcessor.from_new_request(tokenizer, z2z_request)) is Zip2ZipLogprobsProcessor
    plain_request = request(tokenizer.codec.decode(prompt), logprobs=1)
    assert type(IncrementalDetokenizer.from_new_request(tokenizer.base, plain_request)) is FastIncrementalDetokenizer
    assert type(LogprobsProcessor.from_new_request(tokenizer.base, plain_request)) is LogprobsProcessor
    assert type(IncrementalDetokenizer.from_new_request(None, plain_request)) is IncrementalDetokenizer
