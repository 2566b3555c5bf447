"""The ``z2z`` command: one entry point, one function per verb.

    z2z compress notes.txt --tokenizer smollm2      # hypertokens coloured, then statistics
    z2z compress --sample                           # the bundled sample text (a PSF-licensed excerpt)
    cat notes.txt | z2z compress - --tokenizer /path/to/hf_tokenizer_dir --no-color
    python -m z2z_vllm.cli compress --sample        # the same without the installed script
    z2z import-reference their_ckpt/ ours/ --base base_model_dir/   # authors' checkpoint -> ours
    z2z export ours/ servable/ --name z2z-mine      # LoRA merged; then: vllm serve z2z-mine
    z2z init smollm2-135m servable/                 # untrained hyper-encoders; vllm serve servable/
    z2z build-model                                 # models/z2z-smollm2-135m from the shipped weights,
                                                    # registered: vllm serve z2z-smollm2-135m
    z2z list                                        # the z2z model names this machine knows
    z2z pack runs/x/checkpoint-600 z2z_vllm/weights/z2z-smollm2-135m   # checkpoint -> shipped weights

Adding a verb: write the verb as a function ``verb(args) -> exit code``, and a
``_add_<verb>_parser(subparsers)`` that declares its arguments and sets ``handler=verb``; list the
latter in ``_VERB_PARSERS``. A verb reports a user error by raising ``CLIError`` (message on
stderr, exit code 2, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

EXIT_USAGE = 2

# Black text on alternating backgrounds (cyan, yellow, green): three colours, so a hypertoken never
# shares its colour with the previous hypertoken even when one base token sits between them.
_HYPER_COLOURS = ("\x1b[30;46m", "\x1b[30;43m", "\x1b[30;42m")
_RESET = "\x1b[0m"


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


# ---------------------------------------------------------------------------------------------
# Base tokenizers: a data-module name or a Hugging Face folder


@dataclass(frozen=True)
class BaseTokenizer:
    """A Hugging Face ``tokenizers.Tokenizer`` with what the codec needs to know about it."""

    label: str
    tokenizer: object  # tokenizers.Tokenizer (imported lazily: `z2z --help` needs no tokenizers)
    vocab_size: int  # V: highest id + 1, special tokens included
    special_ids: tuple[int, ...]  # disabled in the codec: never merged into a hypertoken


def _tokenizer_from_folder(folder: Path) -> BaseTokenizer:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as unreadable:  # tokenizers raises a bare Exception for malformed files
        raise CLIError(f"cannot load {folder / 'tokenizer.json'}: {unreadable}") from None
    special_ids = tuple(sorted(tokenizer.get_added_tokens_decoder()))
    # Vocabularies may have holes, so V is the highest id + 1, not the number of entries.
    vocab_size = max(max(tokenizer.get_vocab(with_added_tokens=True).values()), *special_ids, -1) + 1
    return BaseTokenizer(str(folder), tokenizer, vocab_size, special_ids)


def _tokenizer_by_name(name: str) -> BaseTokenizer:
    from z2z_vllm.data import load_tokenizer, special_token_ids, vocab_size

    return BaseTokenizer(name, load_tokenizer(name), vocab_size(name), special_token_ids(name))


def _resolve_tokenizer(name_or_dir: str) -> BaseTokenizer:
    from z2z_vllm.data import TOKENIZER_NAMES

    folder = Path(name_or_dir)
    if (folder / "tokenizer.json").is_file():
        return _tokenizer_from_folder(folder)
    if name_or_dir in TOKENIZER_NAMES:
        return _tokenizer_by_name(name_or_dir)
    raise CLIError(
        f"unknown tokenizer {name_or_dir!r}: neither a folder with tokenizer.json "
        f"nor one of {', '.join(TOKENIZER_NAMES)}"
    )


def load_base_tokenizer(name_or_dir: str) -> BaseTokenizer:
    """Tokenizer ``name_or_dir``: a folder holding ``tokenizer.json``, else a ``z2z_vllm.data`` name."""
    from z2z_vllm.data.sources import DataSourceMissing

    try:
        return _resolve_tokenizer(name_or_dir)
    except (DataSourceMissing, ImportError) as missing:  # tokenizers or a pinned source not installed
        raise CLIError(str(missing)) from None


# ---------------------------------------------------------------------------------------------
# compress


@dataclass(frozen=True)
class Compression:
    """One text through tokenizer and codec, with what the display and the statistics need."""

    text: str
    base_ids: list[int]
    base_offsets: list[tuple[int, int]]  # character span of each base token in ``text``
    compressed_ids: list[int]
    codebook: dict[int, tuple[int, ...]]
    vocab_size: int
    max_codebook_size: int
    lossless: bool  # the codec's decode gives back the base ids


def compress_text(text: str, base: BaseTokenizer, *, max_subtokens: int, codebook_size: int) -> Compression:
    from z2z_vllm.codec import LZWCodec

    encoding = base.tokenizer.encode(text, add_special_tokens=False)
    try:
        codec = LZWCodec(
            initial_vocab_size=base.vocab_size,
            max_codebook_size=codebook_size,
            max_subtokens=max_subtokens,
            disabled_ids=base.special_ids,
        )
    except ValueError as invalid:
        raise CLIError(f"invalid codec settings: {invalid}") from None
    compressed = codec.encode(encoding.ids)
    return Compression(
        text=text,
        base_ids=encoding.ids,
        base_offsets=encoding.offsets,
        compressed_ids=compressed,
        codebook=codec.codebook(compressed),
        vocab_size=base.vocab_size,
        max_codebook_size=codebook_size,
        lossless=codec.decode(compressed) == encoding.ids,
    )


def token_segments(result: Compression) -> list[tuple[str, bool]]:
    """The text cut at the start of each compressed token: [(piece, is_hypertoken)].

    Pieces run from one token's first character to the next token's, so they concatenate to the
    whole text (whitespace a tokenizer's offsets skip included). Byte-level tokens that split one
    character share its offsets; the character then goes to the later token.
    """
    starts, is_hyper, base_index = [], [], 0
    for token in result.compressed_ids:
        starts.append(result.base_offsets[base_index][0])
        hyper = token >= result.vocab_size
        is_hyper.append(hyper)
        base_index += len(result.codebook[token]) if hyper else 1
    if not starts:
        return [(result.text, False)] if result.text else []
    starts[0] = 0
    bounds = [*starts, len(result.text)]
    return [(result.text[begin:end], hyper) for (begin, end), hyper in zip(pairwise(bounds), is_hyper, strict=True)]


def _paint(piece: str, colour: str) -> str:
    # Newlines stay outside the colour, or terminals paint the rest of the line.
    return "\n".join(f"{colour}{line}{_RESET}" if line else "" for line in piece.split("\n"))


def render(segments: list[tuple[str, bool]], *, colour: bool) -> str:
    """The text with each hypertoken's piece on a background colour (cycled), base tokens plain."""
    if not colour:
        return "".join(piece for piece, _ in segments)
    painted, hyper_count = [], 0
    for piece, hyper in segments:
        if hyper:
            painted.append(_paint(piece, _HYPER_COLOURS[hyper_count % len(_HYPER_COLOURS)]))
            hyper_count += 1
        else:
            painted.append(piece)
    return "".join(painted)


def compression_stats(result: Compression) -> list[tuple[str, str]]:
    """(label, value) lines describing one compression."""
    num_bytes = len(result.text.encode("utf-8"))
    base, compressed = len(result.base_ids), len(result.compressed_ids)
    hyper_emitted = [token for token in result.compressed_ids if token >= result.vocab_size]
    reduction = 100.0 * (1 - compressed / base) if base else 0.0
    bytes_per_base = num_bytes / base if base else 0.0
    bytes_per_compressed = num_bytes / compressed if compressed else 0.0
    return [
        ("bytes", f"{num_bytes:,}"),
        ("base tokens", f"{base:,}"),
        ("compressed tokens", f"{compressed:,}"),
        ("reduction", f"{reduction:.1f} %"),
        ("entries created", f"{len(result.codebook):,} of {result.max_codebook_size:,}"),
        ("entries used", f"{len(set(hyper_emitted)):,} distinct ({len(hyper_emitted):,} hypertokens emitted)"),
        ("bytes per token", f"{bytes_per_base:.2f} before, {bytes_per_compressed:.2f} after"),
        ("lossless", "yes" if result.lossless else "NO: decode differs from the base ids"),
    ]


def _decode_utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise CLIError(f"not UTF-8 text: {source} ({bad.reason} at byte {bad.start})") from None


def _read_input(args: argparse.Namespace) -> str:
    """The text to compress, byte for byte (no newline translation: byte counts must be exact)."""
    if args.sample and args.file is not None:
        raise CLIError("give a FILE or --sample, not both")
    if args.sample:
        from z2z_vllm.samples import sample_text

        return sample_text()
    if args.file is None:
        raise CLIError("give a FILE, - for stdin, or --sample")
    if args.file == "-":
        return _decode_utf8(sys.stdin.buffer.read(), "stdin")
    try:
        return _decode_utf8(Path(args.file).read_bytes(), args.file)
    except FileNotFoundError:
        raise CLIError(f"no such file: {args.file}") from None
    except IsADirectoryError:
        raise CLIError(f"is a directory, not a file: {args.file}") from None


def compress(args: argparse.Namespace) -> int:
    """Show which spans of a text become hypertokens, then the compression statistics."""
    text = _read_input(args)
    base = load_base_tokenizer(args.tokenizer)
    result = compress_text(text, base, max_subtokens=args.max_subtokens, codebook_size=args.codebook_size)
    colour = sys.stdout.isatty() if args.color is None else args.color
    out = sys.stdout
    out.write(render(token_segments(result), colour=colour))
    if text and not text.endswith("\n"):
        out.write("\n")
    out.write(f"\n--- {base.label} (V={base.vocab_size:,}), M={args.max_subtokens}, C={args.codebook_size}\n")
    stats = compression_stats(result)
    width = max(len(label) for label, _ in stats)
    for label, value in stats:
        out.write(f"{label:<{width}}  {value}\n")
    return 0


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _add_compress_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="show a text's hypertokens (LZW) and compression statistics",
        description=compress.__doc__,
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="UTF-8 text file, or - for stdin")
    parser.add_argument("--sample", action="store_true", help="use the bundled sample text instead of FILE")
    parser.add_argument(
        "--tokenizer",
        default="smollm2",
        metavar="NAME_OR_DIR",
        help="a tokenizer name (gpt2, llama3, qwen2.5, smollm2, ...) or a folder with tokenizer.json "
        "(default: smollm2)",
    )
    parser.add_argument("--max-subtokens", type=_positive_int, default=3, metavar="M", help="M (default 3)")
    parser.add_argument("--codebook-size", type=_positive_int, default=1024, metavar="C", help="C (default 1024)")
    parser.add_argument(
        "--color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="colour hypertokens (default: only when stdout is a terminal)",
    )
    parser.set_defaults(handler=compress)


# ---------------------------------------------------------------------------------------------
# list


def list_models(args: argparse.Namespace) -> int:
    """List the z2z model names registered on this machine (by `z2z build-model`, or
    `z2z export` / `z2z init` with --name): what `vllm serve NAME` accepts from any folder."""
    from z2z_vllm.model_names import hub_cache_dir, registered_models

    models = registered_models()
    if not models:
        print(f"no z2z models registered in {hub_cache_dir()}: run `z2z build-model`")
        return 0
    rows = [("NAME", "BASE", "V", "C", "M", "SIZE", "FOLDER")]
    for model in models:
        if not model.present:
            rows.append((model.name, "?", "?", "?", "?", "?", f"{model.folder} (missing: rebuild or register again)"))
            continue
        rows.append((
            model.name,
            f"{model.base_architecture} {_parameter_count(model.base_parameters)}",
            f"{model.initial_vocab_size:,}",
            f"{model.max_codebook_size:,}",
            str(model.max_subtokens),
            f"{model.size_bytes / 1e6:,.1f} MB",
            str(model.folder),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]))
    return 0


def _parameter_count(count: int) -> str:
    return f"{count / 1e6:,.0f}M" if count >= 1_000_000 else f"{count:,}"


def _add_list_parser(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list the z2z model names vLLM can serve here", description=list_models.__doc__)
    parser.set_defaults(handler=list_models)


# ---------------------------------------------------------------------------------------------
# export, import-reference (checkpoints)

_DTYPES = ("float32", "bfloat16", "float16")


def _checkpoint_errors(action):
    """Runs ``action()``, turning the checkpoint tools' user errors into ``CLIError``."""
    try:
        return action()
    except (OSError, ValueError, NotImplementedError) as error:  # missing files / base, bad settings
        raise CLIError(str(error)) from None


def _check_name(name: str | None) -> None:
    """Refuses a bad ``--name`` before any work is done."""
    from z2z_vllm.model_names import check_name

    if name is not None:
        _checkpoint_errors(lambda: check_name(name))


def _served_as(folder: Path, name: str | None) -> str:
    """Registers ``folder`` as ``name`` when one is given (z2z_vllm.model_names); returns what to
    pass to `vllm serve`."""
    from z2z_vllm.model_names import register_model

    if name is None:
        return str(folder)
    _checkpoint_errors(lambda: register_model(folder, name))
    return name


def _add_name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", metavar="NAME",
        help="also register the folder under this model name (a Hugging Face cache entry, no copy), so that "
        "`vllm serve NAME` and LLM(model=NAME) find it from any folder, offline",
    )  # fmt: skip


def export(args: argparse.Namespace) -> int:
    """Write a vLLM-servable folder (LoRA merged, hyper-encoders, tokenizer, config.json) from a
    training checkpoint."""
    from z2z_vllm.training.checkpoints import export_for_serving

    _check_name(args.name)
    dst = _checkpoint_errors(
        lambda: export_for_serving(args.src, args.dst, base_model=args.base, dtype=args.dtype)
    )
    print(f"exported {args.src} -> {dst} (serve with: vllm serve {_served_as(dst, args.name)})")
    return 0


def _add_export_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a vLLM-servable z2z model folder", description=export.__doc__)
    parser.add_argument("src", metavar="SRC", help="checkpoint folder (z2z_config.json + z2z_encoders.safetensors)")
    parser.add_argument("dst", metavar="DST", help="output folder (must not exist or be empty)")
    parser.add_argument("--base", metavar="BASE", help="base model folder or name (default: the checkpoint's)")
    parser.add_argument("--dtype", choices=_DTYPES, help="load and write the weights in this dtype (default: as stored)")
    _add_name_argument(parser)
    parser.set_defaults(handler=export)


def init(args: argparse.Namespace) -> int:
    """Write a vLLM-servable z2z model over a base model with freshly initialised (untrained)
    hyper-encoders: for trying the serving path before a model is uptrained. With the residual
    encoder a hypertoken starts as its first subtoken, so text stays readable but loses detail."""
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from z2z_vllm.modeling import EncoderConfig, Zip2ZipForCausalLM
    from z2z_vllm.training.checkpoints import export_for_serving, save_checkpoint
    from z2z_vllm.training.trainer import resolve_base_model

    _check_name(args.name)

    def build():
        base_dir = resolve_base_model(args.base)
        model = Zip2ZipForCausalLM.from_base(
            AutoModelForCausalLM.from_pretrained(base_dir),
            tokenizer=AutoTokenizer.from_pretrained(base_dir),
            max_codebook_size=args.codebook_size,
            max_subtokens=args.max_subtokens,
            protect_digits=args.protect_digits,
            input_encoder=EncoderConfig(kind=args.encoder),
            reconstruction_weight=0.0,
        )
        with tempfile.TemporaryDirectory() as scratch:
            checkpoint = save_checkpoint(model, Path(scratch) / "checkpoint")
            return export_for_serving(checkpoint, args.dst, base_model=base_dir, dtype=args.dtype)

    dst = _checkpoint_errors(build)
    print(f"initialised {args.base} -> {dst} (serve with: vllm serve {_served_as(dst, args.name)})")
    return 0


def _add_init_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "init", help="write an untrained, servable z2z model over a base model", description=init.__doc__
    )
    parser.add_argument("base", metavar="BASE", help="base model folder, or a z2z_vllm.data.models name (smollm2-135m)")
    parser.add_argument("dst", metavar="DST", help="output folder (must not exist or be empty)")
    parser.add_argument("--codebook-size", type=_positive_int, default=256, metavar="C", help="hypertoken slots (default 256)")
    parser.add_argument("--max-subtokens", type=_positive_int, default=4, metavar="M", help="base ids per hypertoken (default 4)")
    parser.add_argument(
        "--encoder", default="residual", metavar="KIND",
        help="hyper-encoder: mean, attention, transformer or residual (default residual)",
    )  # fmt: skip
    parser.add_argument("--protect-digits", action="store_true", help="never merge tokens containing digits")
    parser.add_argument("--dtype", choices=_DTYPES, default="bfloat16", help="weights dtype (default bfloat16)")
    _add_name_argument(parser)
    parser.set_defaults(handler=init)


def build_model(args: argparse.Namespace) -> int:
    """Write the plain base folder and the servable z2z model built from the weights this package
    ships (LoRA merged into the base, hyper-encoders), and register the z2z model under its name
    (the weights folder's: z2z-smollm2-135m) so that `vllm serve NAME` finds it from any folder;
    folders already up to date are kept."""
    from z2z_vllm.weights import build_model as build

    built = _checkpoint_errors(lambda: build(args.out_dir, weights=args.weights, dtype=args.dtype))
    state = "built" if built.rebuilt else "up to date"
    name = _served_as(built.z2z, built.z2z.name)
    print(f"{state}: {built.plain} (plain base), {built.z2z} as {name} (serve with: vllm serve {name})")
    return 0


def _add_build_model_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-model", help="build the bundled z2z model (and its plain base) for vLLM", description=build_model.__doc__
    )
    parser.add_argument("--out-dir", default="models", metavar="DIR", help="where the two folders go (default models)")
    parser.add_argument(
        "--weights", metavar="DIR", help="weights written by `z2z pack` (default: the shipped z2z-smollm2-135m)"
    )
    parser.add_argument("--dtype", choices=_DTYPES, default="bfloat16", help="weights dtype (default bfloat16)")
    parser.set_defaults(handler=build_model)


def pack(args: argparse.Namespace) -> int:
    """Write the shippable part of a LoRA training checkpoint (adapter and hyper-encoders in
    bfloat16, no base, no optimizer state), then build it once and store the HF reference's greedy
    continuation of a held-out code prompt beside it (expected_greedy.json)."""
    from z2z_vllm.training.checkpoints import pack_weights
    from z2z_vllm.weights import write_expectation

    dst = _checkpoint_errors(lambda: pack_weights(args.src, args.dst, base_model=args.base))
    expectation = _checkpoint_errors(lambda: write_expectation(dst))
    size = sum(f.stat().st_size for f in dst.iterdir())
    print(f"packed {args.src} -> {dst} ({size / 1e6:.1f} MB); greedy check: {expectation['output_text']!r}")
    return 0


def _add_pack_parser(subparsers) -> None:
    parser = subparsers.add_parser("pack", help="write a checkpoint's shippable weights", description=pack.__doc__)
    parser.add_argument("src", metavar="SRC", help="LoRA training checkpoint folder")
    parser.add_argument("dst", metavar="DST", help="output folder (must not exist or be empty)")
    parser.add_argument("--base", default="smollm2-135m", help="base model name recorded (default smollm2-135m)")
    parser.set_defaults(handler=pack)


def import_reference(args: argparse.Namespace) -> int:
    """Convert a checkpoint of the authors' zip2zip package (zip2zip_config.json,
    zip2zip_encoders.safetensors, PEFT adapter or full weights) into our checkpoint format."""
    from z2z_vllm.training.reference_import import import_reference as convert

    dst = _checkpoint_errors(lambda: convert(args.src, args.dst, base_model=args.base))
    print(f"imported {args.src} -> {dst} (then: z2z export {dst} OUT)")
    return 0


def _add_import_reference_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-reference", help="convert an authors' zip2zip checkpoint to ours", description=import_reference.__doc__
    )
    parser.add_argument("src", metavar="SRC", help="folder with zip2zip_config.json")
    parser.add_argument("dst", metavar="DST", help="output checkpoint folder")
    parser.add_argument(
        "--base", metavar="BASE_DIR", help="base model folder or name (default: base_model_name_or_path of SRC)"
    )
    parser.set_defaults(handler=import_reference)


# ---------------------------------------------------------------------------------------------
# train, eval-bpb


def train(args: argparse.Namespace) -> int:
    """Uptrain a zip2zip model (LoRA on the base + hyper-encoders) from a YAML/JSON config, with
    KEY=VALUE overrides. Resumes from the latest checkpoint in the config's output_dir."""
    from z2z_vllm.training.config import load_train_config, parse_overrides
    from z2z_vllm.training.trainer import train as run_training

    try:
        cfg = load_train_config(args.config, overrides=parse_overrides(args.set))
    except (OSError, ValueError, TypeError) as error:  # unreadable file, bad key or value
        raise CLIError(str(error)) from None
    try:
        state = run_training(cfg, resume=args.resume)
    except FileExistsError as error:
        raise CLIError(str(error)) from None
    print(
        f"trained {state.step} steps in {state.elapsed_s:.0f} s: {state.compressed_tokens:,} compressed tokens "
        f"({state.base_tokens:,} base tokens); checkpoints in {cfg.output_dir}"
    )
    return 0


def _add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="LoRA-uptrain a zip2zip model", description=train.__doc__)
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON TrainConfig (see configs/)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key; VALUE is read as YAML (repeatable: --set max_steps=200 --set lr=1e-4)",
    )
    parser.add_argument(
        "--resume", action=argparse.BooleanOptionalAction, default=True,
        help="continue from the latest checkpoint in output_dir (default); --no-resume refuses a used folder",
    )
    parser.set_defaults(handler=train)


def eval_bpb(args: argparse.Namespace) -> int:
    """Bits per byte of text under a trained zip2zip model (canonical LZW path: an upper bound)
    and under its base model, with the ratio."""
    from z2z_vllm.training.data import load_documents
    from z2z_vllm.training.evaluate import UPPER_BOUND_NOTE, compare_bits_per_byte

    if not args.files and args.domain is None:
        raise CLIError("give text FILEs or --domain")
    try:
        documents = load_documents(files=args.files, domain=args.domain, split="heldout", max_bytes=args.max_bytes)
        z2z, base = compare_bits_per_byte(
            args.model, documents, base=args.base, window=args.window, batch_size=args.batch_size, bf16=args.bf16
        )
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise CLIError(str(error)) from None
    out = sys.stdout
    out.write(f"text: {len(documents)} documents, {z2z.num_bytes:,} UTF-8 bytes; windows of {args.window} tokens\n")
    out.write(f"{'model':<6} {'tokens':>10} {'windows':>8} {'bits/token':>11} {'bits/byte':>10}\n")
    for row in (base, z2z):
        out.write(f"{row.label:<6} {row.scored_tokens:>10,} {row.windows:>8,} {row.bits_per_token:>11.4f} {row.bits_per_byte:>10.4f}\n")
    out.write(f"ratio z2z/base bits/byte: {z2z.bits_per_byte / base.bits_per_byte:.4f}\n")
    out.write(f"compressed/base tokens: {z2z.scored_tokens / base.scored_tokens:.4f}\n")
    out.write(f"note: {UPPER_BOUND_NOTE}\n")
    return 0


def _add_eval_bpb_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval-bpb", help="bits per byte: z2z model vs its base", description=eval_bpb.__doc__)
    parser.add_argument("files", nargs="*", metavar="FILE", help="UTF-8 text files (one document each)")
    parser.add_argument("--model", required=True, metavar="DIR", help="training checkpoint or output dir (latest checkpoint)")
    parser.add_argument("--base", metavar="DIR", help="base model to compare with (default: the one trained from)")
    parser.add_argument("--domain", help="also score this corpus domain's held-out split (z2z_vllm.data)")
    parser.add_argument("--max-bytes", type=_positive_int, metavar="N", help="cap on the domain's held-out text")
    parser.add_argument("--window", type=_positive_int, default=1024, metavar="T", help="tokens per window (default 1024)")
    parser.add_argument("--batch-size", type=_positive_int, default=1, metavar="B", help="windows per forward (default 1)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (weights stay float32)")
    parser.set_defaults(handler=eval_bpb)


# ---------------------------------------------------------------------------------------------
# Entry point

_VERB_PARSERS = (
    _add_compress_parser,
    _add_init_parser,
    _add_build_model_parser,
    _add_list_parser,
    _add_export_parser,
    _add_pack_parser,
    _add_import_reference_parser,
    _add_train_parser,
    _add_eval_bpb_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="z2z", description="zip2zip (LZW hypertokens) tools.")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add_verb_parser in _VERB_PARSERS:
        add_verb_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``z2z`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # usage errors and --help: keep main() a plain function
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    try:
        return args.handler(args)
    except CLIError as error:
        print(f"z2z {args.handler.__name__}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
