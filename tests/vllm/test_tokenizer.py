"""Zip2ZipTokenizer: vLLM's tokenizer protocol over the base tokenizer and the LZW codec."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.vllm.helpers import repeated_words

vllm = pytest.importorskip("vllm")

from z2z_vllm.modeling.config import Zip2ZipConfig  # noqa: E402
from z2z_vllm.vllm.tokenizer import Zip2ZipTokenizer, hypertoken_name  # noqa: E402

V, C, M = 48, 24, 3
# A chat template for the word-level test tokenizer: each message's words after a <s>.
CHAT_TEMPLATE = "{% for message in messages %}<s> {{ message['content'] }} {% endfor %}"
TEXT = repeated_words([1, 2, 3, 4], 8)


@pytest.fixture(scope="module")
def tokenizer(tiny_export) -> Zip2ZipTokenizer:
    return Zip2ZipTokenizer.from_pretrained(tiny_export)


def test_loads_base_tokenizer_and_codec_of_the_export(tokenizer, tiny_export):
    config = Zip2ZipConfig.load(tiny_export)
    assert tokenizer.initial_vocab_size == config.initial_vocab_size == V
    assert (tokenizer.codec.max_codebook_size, tokenizer.codec.max_subtokens) == (C, M)
    assert tokenizer.base.encode("t1 t47") == [1, 47]
    assert tokenizer.vocab_size == len(tokenizer) == V + C
    assert tokenizer.max_token_id == V + C - 1
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 0, 0)
    assert tokenizer.all_special_ids == [0]


def test_loads_with_the_arguments_vllm_passes(tiny_export):
    # vllm.tokenizers.registry.get_tokenizer, for a generating model.
    tokenizer = Zip2ZipTokenizer.from_pretrained(
        str(tiny_export), trust_remote_code=False, revision=None, download_dir=None, truncation_side="left"
    )
    assert tokenizer.truncation_side == "left"
    assert tokenizer.name_or_path == str(tiny_export)


def test_text_round_trips_through_shorter_compressed_ids(tokenizer):
    base_ids = tokenizer.base.encode(TEXT)
    ids = tokenizer.encode(TEXT)
    assert ids == tokenizer.codec.encode(base_ids)
    assert len(ids) < len(base_ids)
    assert max(ids) >= V  # hypertokens
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer(TEXT)["input_ids"] == ids


def test_batch_call_encodes_each_text(tokenizer):
    encoding = tokenizer([TEXT, "t5 t6"])
    assert encoding["input_ids"] == [tokenizer.encode(TEXT), [5, 6]]
    assert encoding["attention_mask"] == [[1] * len(tokenizer.encode(TEXT)), [1, 1]]


def test_special_tokens_are_added_and_skipped_as_by_the_base_tokenizer(tiny_export):
    tokenizer = Zip2ZipTokenizer.from_pretrained(tiny_export, add_bos_token=True)
    assert tokenizer.num_special_tokens_to_add() == 1
    with_bos = tokenizer.encode(TEXT)
    without_bos = tokenizer.encode(TEXT, add_special_tokens=False)
    assert with_bos == [0, *without_bos]
    assert tokenizer.decode(with_bos, skip_special_tokens=True) == TEXT
    assert tokenizer.decode(with_bos) == "<s> " + TEXT


def test_right_truncation_keeps_the_first_ids(tiny_export):
    tokenizer = Zip2ZipTokenizer.from_pretrained(tiny_export, truncation_side="right")
    ids = tokenizer.encode(TEXT)
    assert tokenizer(TEXT, truncation=True, max_length=7)["input_ids"] == ids[:7]
    assert tokenizer.encode(TEXT, max_length=7) == ids[:7]  # transformers: max_length truncates
    assert tokenizer.encode(TEXT, truncation=False, max_length=7) == ids
    assert tokenizer.encode(TEXT, truncation=True, max_length=0) == []


def test_left_truncation_reencodes_the_longest_tail_that_fits(tiny_export):
    tokenizer = Zip2ZipTokenizer.from_pretrained(tiny_export, truncation_side="left")
    base_ids = tokenizer.base.encode(TEXT)
    ids = tokenizer.encode(TEXT, truncation=True, max_length=7)
    kept = tokenizer.codec.decode(ids)  # valid on its own: no hypertoken of the cut start
    assert len(ids) <= 7
    assert kept == base_ids[-len(kept) :]
    assert len(kept) > 7  # still compressed
    # One more base id would not fit in 7 ids.
    assert len(tokenizer.codec.encode(base_ids[-len(kept) - 1 :])) > 7
    assert tokenizer.truncate(tokenizer.encode(TEXT), max_length=7) == ids


@settings(max_examples=300, deadline=None)
@given(
    # Few distinct ids: long entries, and compressed lengths that jump as an end grows.
    base_ids=st.lists(
        st.one_of(st.integers(1, 2), st.integers(1, 2), st.integers(1, V - 1)), min_size=8, max_size=60
    ),
    max_length=st.integers(1, 20),
)
# The compressed length of an end is not monotone in its length: here the last 6 base ids
# compress to 5 ids and the last 7 to 4; bisecting on it kept 5 base ids where 7 fit.
@example(base_ids=[1, 1, 1, 1, 1, 1, 2, 1, 1, 2], max_length=4)
def test_left_truncation_keeps_the_most_base_ids_that_fit(tokenizer, base_ids, max_length):
    codec = tokenizer.codec
    kept = codec.decode(tokenizer.truncate(codec.encode(base_ids), max_length=max_length, side="left"))
    most = max(k for k in range(len(base_ids) + 1) if len(codec.encode(base_ids[len(base_ids) - k :])) <= max_length)
    assert kept == base_ids[len(base_ids) - most :]


def test_truncate_compressed_ids(tokenizer):
    ids = tokenizer.encode(TEXT)
    assert tokenizer.truncate(ids, max_length=6, side="right") == ids[:6]
    assert tokenizer.truncate(ids, max_length=len(ids), side="left") == ids
    left = tokenizer.truncate(ids, max_length=6, side="left")
    assert len(left) <= 6 and TEXT.endswith(tokenizer.decode(left))
    with pytest.raises(ValueError, match="side"):
        tokenizer.truncate(ids, max_length=6, side="middle")
    with pytest.raises(ValueError, match="position 1"):
        tokenizer.truncate([1, 60, 2, 3, 4, 5, 6, 7], max_length=6, side="left")


def test_decode_rejects_hypertokens_undefined_at_their_position(tokenizer):
    with pytest.raises(ValueError, match="id 60 at position 2"):
        tokenizer.decode([1, 2, 60])
    # Outputs alone are not a sequence: a hypertoken defined by the prompt has no meaning.
    ids = tokenizer.encode(TEXT)
    first_hyper = next(i for i, token_id in enumerate(ids) if token_id >= V)
    with pytest.raises(ValueError, match="position 0"):
        tokenizer.decode(ids[first_hyper:])


def test_hypertokens_have_placeholder_names_in_a_consistent_vocabulary(tokenizer):
    ids = [1, 2, 48, 49]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["t1", "t2", hypertoken_name(48), hypertoken_name(49)] == ["t1", "t2", "<hyper:48>", "<hyper:49>"]
    assert tokenizer.convert_tokens_to_ids(tokens) == ids
    assert tokenizer.convert_tokens_to_ids("<hyper:71>") == 71
    assert tokenizer.convert_ids_to_tokens([0, 3, 72], skip_special_tokens=True) == ["t3", None]
    vocab = tokenizer.get_vocab()
    assert len(vocab) == V + C and sorted(vocab.values()) == list(range(V + C))


def test_chat_template_renders_with_the_base_template_then_compresses(tokenizer):
    messages = [{"role": "user", "content": TEXT}, {"role": "assistant", "content": "t9 t9"}]
    text = tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, tokenize=False)
    assert text == f"<s> {TEXT} <s> t9 t9 "
    ids = tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE)
    assert ids == tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text.strip()
    encoding = tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, return_dict=True)
    assert encoding["input_ids"] == ids


def test_prompt_character_bound_is_the_base_tokenizers(tokenizer):
    longest_base_token = max(len(token) for token in tokenizer.base.get_vocab())
    assert tokenizer.max_chars_per_token == longest_base_token


class _RecordingBase:
    """A base tokenizer that records the texts it tokenizes."""

    def __init__(self, base) -> None:
        self._base = base
        self.texts: list[str] = []

    def __call__(self, text, *args, **kwargs):
        self.texts.extend([text] if isinstance(text, str) else text)
        return self._base(text, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._base, name)


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_tokenizes_only_the_end_it_can_keep(tiny_export, side):
    tokenizer = Zip2ZipTokenizer.from_pretrained(tiny_export, truncation_side=side)
    recording = Zip2ZipTokenizer(_RecordingBase(tokenizer.base), tokenizer.config)
    long_text = " ".join(f"t{(i * i) % 7 + 1}" for i in range(20_000))  # 60,000 characters
    expected = tokenizer.truncate(tokenizer.encode(long_text), max_length=7)
    assert recording(long_text, truncation=True, max_length=7)["input_ids"] == expected
    assert recording([long_text, TEXT], truncation=True, max_length=7)["input_ids"] == [
        expected,
        tokenizer.truncate(tokenizer.encode(TEXT), max_length=7),
    ]
    reach = (M * 7 + 2) * tokenizer.max_chars_per_token
    assert [len(text) for text in recording.base.texts] == [reach, reach, min(reach, len(TEXT))]


def test_pickles_and_copies_with_its_own_codec(tokenizer):
    ids = tokenizer.encode(TEXT)
    restored = pickle.loads(pickle.dumps(tokenizer))
    assert restored.encode(TEXT) == ids and restored.config == tokenizer.config
    copied = copy.copy(tokenizer)
    assert copied.base is not tokenizer.base  # so that wrapping the copy's base leaves ours alone
    assert copied.decode(ids) == TEXT
