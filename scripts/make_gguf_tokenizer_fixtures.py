#!/usr/bin/env python3
"""Writes the fixtures of flix-model/tests/tokenize_gguf.rs: small GGUF tokenizer vocabularies and
the token ids Hugging Face transformers gives for a set of texts with them.

transformers' own GGUF tokenizer conversion is the reference: each vocabulary is written as a
tiny GGUF file (metadata only, no tensors) with the `gguf` package, loaded with
`AutoTokenizer.from_pretrained(dir, gguf_file=name)`, and that tokenizer's ids are recorded.

    fixtures/gguf-tokenizer/<name>.json   the vocabulary as flix_model::tokenize_gguf::GgufVocab
                                          (the `tokenizer.ggml.*` keys) and, under "reference",
                                          transformers' ids (with special tokens), decoded
                                          texts, merges and added tokens
    fixtures/gguf-tokenizer/gemma3_270m_ids.json
                                          texts and transformers' ids for the real Gemma 3 270M
                                          GGUF (only with --gemma3 PATH)

The vocabularies are learned here from TEXTS with `sentencepiece` (BPE with byte fallback, as
Gemma and Llama 2 ship) and with `tokenizers` (byte-level BPE, as Llama 3 and Qwen2 ship), then
spelled the way llama.cpp's converter writes them into a GGUF.

With --gemma3 PATH (the real Gemma 3 270M GGUF) the script also writes its ids fixture, and with
--dump-vocab OUT it writes that file's tokenizer metadata as GgufVocab JSON to OUT (outside the
repository: the vocabulary is part of the model, under the Gemma Terms of Use), for the test that
runs when FLIX_GEMMA3_VOCAB_JSON names it.

    /opt/hfvenv/bin/python scripts/make_gguf_tokenizer_fixtures.py \
        [--gemma3 ~/.cache/flix/gemma3-270m/gemma-3-270m-q4_k_m.gguf \
         --dump-vocab ~/.cache/flix/gemma3-270m/vocab.json]
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import gguf
import numpy as np
import sentencepiece as spm
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

FIXTURES = Path(__file__).resolve().parent.parent / "flix-model" / "tests" / "fixtures" / "gguf-tokenizer"

# Short sentences from FLORES-200 as shipped in SIB-200 (CC BY-SA 4.0), one per script, plus
# synthetic edge cases. The ids of every text are compared.
TEXTS = [
    "Take a look at what trips the agent is promoting, whether on a website or in a shop window.",
    "Das Hershey-Chase-Experiment war eines der maßgeblichen Indizien, dass DNA ein genetisches Material ist.",
    "Le Vatican compte environ 800 habitants. C'est le plus petit pays indépendant au monde, et le moins peuplé.",
    "ከሩብ ወደ ግማሽ ማይል ሩጫ ባለው ለውጥ ፣ ፍጥነት በጣም ያነሰ ጠቀሜታ ያለው እና ጽናት ፍጹም አስፈላጊ ይሆናል።",
    "从四分之一英里转变为半英里的赛跑，速度变得不那么重要了，耐力成为绝对重要的因素。",
    "クォーターマラソンからハーフマラソンに転向する場合、スピードの重要性ははるかに低くなり、持久力が絶対的に必要になります。",
    "ألقِ نظرة على الرحلات التي يقوم الوكيل بترويجها، سواءً كان ذلك على موقع إلكتروني أو في نافذة متجر.",
    "ดูแผนท่องเที่ยวที่ตัวแทนกำลังโปรโมทจะเป็นบนเว็บไซต์หรือบนหน้าต่างร้านค้าก็ได้",
    "Chẳng hạn, người ta có thể nói xe hơi chạy động cơ tất yếu dẫn tới sự phát triển của đường xá.",
    "नमस्ते, आप कैसे हैं? मैं ठीक हूँ।",
    "a  b   c    d",
    "  two leading spaces",
    "trailing space ",
    " ",
    "tab\tseparated\t\tcolumns",
    "line one\nline two",
    "paragraph\n\n\nbreak\r\nwindows",
    "12345 3.14159 2026-12-03",
    "I ❤️ Rust 🦀👍🏽!",
    "don't, I'll, we've; IT'S",
    "<start_of_turn>user\nBonjour<end_of_turn>\n",
    "x<think>y</think> [multimodal]",
    "wide" + " " * 40 + "gap\t\t\tend",
    "<start_of_image> and <unused5>",
    "",
]

# Extra text the toy vocabularies are learned from, so they have merges across scripts.
EXTRA_TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog while the agent takes a look at the trips.",
    "Die Reise war schön und die Straßen waren grün; über Brücken fahren wir weiter.",
    "Nous avons été très contents de voir les habitants du pays et le monde entier.",
    "    indented code\n\tand tabs\n\n\nand blank lines",
]


def sentencepiece_vocab(model_dir: Path, gemma_like: bool) -> dict:
    """A BPE SentencePiece model learned from TEXTS, spelled as llama.cpp's converter writes it.

    Gemma-like: no dummy prefix, whitespace and newline runs and a few markers as user-defined
    pieces, turn markers as control pieces, `<unk>` marked control as in Gemma's file. Llama-2-like:
    dummy prefix, `<unk>` marked unknown, `<s>`/`</s>` control.
    """
    corpus = model_dir / "corpus.txt"
    corpus.write_text("\n".join(TEXTS + EXTRA_TRAINING_TEXT) * 3, encoding="utf-8")
    prefix = str(model_dir / ("gemma" if gemma_like else "llama"))
    if gemma_like:
        specials = dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
                        bos_piece="<bos>", unk_piece="<unk>")
        user_defined = ["[multimodal]", "\n", "\n\n", "\n\n\n", "\t", "\t\t", "<think>"]
        control = ["<mask>", "<start_of_turn>", "<end_of_turn>"]
    else:
        specials = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
        user_defined = []
        control = []
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=700,
        hard_vocab_limit=False,
        byte_fallback=True,
        character_coverage=0.98,  # leaves rare characters to the byte pieces
        add_dummy_prefix=not gemma_like,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=gemma_like,
        allow_whitespace_only_pieces=True,
        user_defined_symbols=user_defined,
        control_symbols=control,
        num_threads=1,
        minloglevel=2,
        **specials,
    )
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(3 if gemma_like else 2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        elif tokens[-1] in user_defined:
            types.append(4)
        else:
            types.append(1)
    if gemma_like:
        # Gemma's file spells its whitespace-run pieces with real spaces ("  ", not "▁▁") and
        # marks them user-defined.
        for i, token in enumerate(tokens):
            if len(token) > 1 and set(token) == {"▁"}:
                tokens[i] = " " * len(token)
                types[i] = 4
        # Gemma's file also scores every piece but the normal ones -1000: the scores disagree with
        # the merge order, which is the order of the file.
        scores = [score if kind == 1 else -1000.0 for score, kind in zip(scores, types)]
    return {
        "architecture": "gemma3" if gemma_like else "llama",
        "model": "llama",
        "pre": "default",
        "tokens": tokens,
        "scores": scores,
        "token_types": types,
        "merges": None,
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "pad_id": sp.pad_id() if sp.pad_id() >= 0 else None,
        "add_bos": True,
        "add_eos": False,
        "add_space_prefix": not gemma_like,
    }


LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def byte_level_vocab(pre: str) -> dict:
    """A byte-level BPE learned from TEXTS with `tokenizers`, as Llama 3 ("llama-bpe") or Qwen2
    ("qwen2") ship it: control tokens at the end, merges as "a b" strings."""
    split = {"llama-bpe": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}[pre]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(split), behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator((TEXTS + EXTRA_TRAINING_TEXT) * 3, trainer)
    model = json.loads(tok.to_str())["model"]
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    tokens = [token for token, _ in by_id]
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"]]
    types = [1] * len(tokens)
    if pre == "llama-bpe":
        control = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
        bos, eos = 0, 1
    else:
        control = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        bos, eos = 0, 0
    base = len(tokens)
    tokens += control + ["<think>", "</think>"]
    types += [3] * len(control) + [4, 4]
    return {
        "architecture": "llama" if pre == "llama-bpe" else "qwen2",
        "model": "gpt2",
        "pre": pre,
        "tokens": tokens,
        "scores": None,
        "token_types": types,
        "merges": merges,
        "bos_id": base + bos,
        "eos_id": base + eos,
        "unk_id": None,
        "pad_id": None,
        "add_bos": pre == "llama-bpe",
        "add_eos": None,
        "add_space_prefix": None,
    }


def write_gguf(vocab: dict, path: Path) -> None:
    """A GGUF with the vocabulary and just enough model metadata for transformers to pick a
    config (no tensors)."""
    arch = vocab["architecture"]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(128)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(1)
    writer.add_key_length(16)
    writer.add_value_length(16)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        writer.add_sliding_window(64)
    writer.add_tokenizer_model(vocab["model"])
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    if vocab["scores"] is not None:
        writer.add_token_scores(vocab["scores"])
    writer.add_token_types(vocab["token_types"])
    if vocab["merges"] is not None:
        writer.add_token_merges(vocab["merges"])
    for key, add in [("bos_id", writer.add_bos_token_id), ("eos_id", writer.add_eos_token_id),
                     ("unk_id", writer.add_unk_token_id), ("pad_id", writer.add_pad_token_id)]:
        if vocab[key] is not None:
            add(vocab[key])
    for key, add in [("add_bos", writer.add_add_bos_token), ("add_eos", writer.add_add_eos_token),
                     ("add_space_prefix", writer.add_add_space_prefix)]:
        if vocab[key] is not None:
            add(vocab[key])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def reference(gguf_path: Path) -> dict:
    """transformers' ids (with special tokens) for TEXTS, its decoding of them (without special
    tokens), its merges and its added tokens ([id, text, special]), from the GGUF file."""
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    backend = json.loads(tok.backend_tokenizer.to_str())
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in backend["model"]["merges"]]
    ids = [tok.encode(text) for text in TEXTS]
    return {
        "transformers_class": type(tok).__name__,
        "texts": TEXTS,
        "ids": ids,
        "decoded": [tok.decode(i, skip_special_tokens=True) for i in ids],
        "merges": merges,
        "added_tokens": [[a["id"], a["content"], a["special"]] for a in backend["added_tokens"]],
    }


def vocab_from_gguf(path: Path) -> dict:
    """The `tokenizer.ggml.*` metadata of a GGUF file, as GgufVocab JSON."""
    reader = gguf.GGUFReader(str(path))

    def value(key):
        field = reader.fields.get(key)
        if field is None:
            return None
        contents = field.contents()
        return contents.tolist() if isinstance(contents, np.ndarray) else contents

    return {
        "architecture": value("general.architecture"),
        "model": value("tokenizer.ggml.model"),
        "pre": value("tokenizer.ggml.pre"),
        "tokens": value("tokenizer.ggml.tokens"),
        "scores": value("tokenizer.ggml.scores"),
        "token_types": value("tokenizer.ggml.token_type"),
        "merges": value("tokenizer.ggml.merges"),
        "bos_id": value("tokenizer.ggml.bos_token_id"),
        "eos_id": value("tokenizer.ggml.eos_token_id"),
        "unk_id": value("tokenizer.ggml.unknown_token_id"),
        "pad_id": value("tokenizer.ggml.padding_token_id"),
        "add_bos": value("tokenizer.ggml.add_bos_token"),
        "add_eos": value("tokenizer.ggml.add_eos_token"),
        "add_space_prefix": value("tokenizer.ggml.add_space_prefix"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gemma3", type=Path, help="the real Gemma 3 270M GGUF file")
    parser.add_argument("--dump-vocab", type=Path, help="write the --gemma3 file's vocabulary JSON here")
    args = parser.parse_args()
    FIXTURES.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vocabularies = {
            "spm-gemma": sentencepiece_vocab(tmp, gemma_like=True),
            "spm-llama": sentencepiece_vocab(tmp, gemma_like=False),
            # Phi-3 ships the Llama 2 layout; only its architecture changes how spaces are read.
            "spm-phi3": dict(sentencepiece_vocab(tmp, gemma_like=False), architecture="phi3"),
            "bpe-llama3": byte_level_vocab("llama-bpe"),
            "bpe-qwen2": byte_level_vocab("qwen2"),
        }
        for name, vocab in vocabularies.items():
            gguf_dir = tmp / name
            gguf_dir.mkdir()
            write_gguf(vocab, gguf_dir / f"{name}.gguf")
            vocab["reference"] = reference(gguf_dir / f"{name}.gguf")
            out = FIXTURES / f"{name}.json"
            out.write_text(json.dumps(vocab, ensure_ascii=False, indent=None) + "\n", encoding="utf-8")
            print(f"wrote {out} ({len(vocab['tokens'])} tokens, {vocab['reference']['transformers_class']})")

    if args.gemma3:
        ref = reference(args.gemma3)
        ref.pop("merges")  # 500k merges; the ids pin them down on the texts
        ref.pop("added_tokens")
        out = FIXTURES / "gemma3_270m_ids.json"
        out.write_text(json.dumps(ref, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {out}")
        if args.dump_vocab:
            args.dump_vocab.write_text(json.dumps(vocab_from_gguf(args.gemma3), ensure_ascii=False), encoding="utf-8")
            print(f"wrote {args.dump_vocab}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
