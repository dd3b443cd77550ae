"""Tokenizers: a deterministic byte-level tokenizer for random/tiny models, local loading for real ones.

Byte tokenizer ids: 0 <pad>, 1 <s> (BOS), 2 </s> (EOS), 3 + b for byte b (259 tokens). No merges, so
every UTF-8 byte is one token; encoding prepends BOS. `add_words` makes chosen whole words single tokens
(ids after the existing ones). Nothing is ever downloaded.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from typing import Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
BYTE_OFFSET = 3
BYTE_VOCAB_SIZE = BYTE_OFFSET + 256


def _byte_to_unicode() -> dict[int, str]:
    """The printable-character stand-in for each byte used by byte-level BPE (GPT-2 convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """The deterministic byte-level tokenizer (module doc), as a transformers fast tokenizer."""
    vocab = {PAD: 0, BOS: 1, EOS: 2}
    for b, ch in _byte_to_unicode().items():
        vocab[ch] = BYTE_OFFSET + b
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, 1)])
    tok.add_special_tokens([PAD, BOS, EOS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   padding_side="right", model_max_length=1024)


def add_words(tokenizer: PreTrainedTokenizerBase, words: Sequence[str], vocab_size: int) -> int:
    """Make each of `words` one token wherever it stands as a whole word ("red" in "the red cube", not in
    "tired"); returns how many were new. Existing ids do not change, new ones follow them, so a model trained
    with the tokenizer goes on working and learns the new ids' embeddings. Why: a small model trained from
    scratch picks out a word given as one token far more easily than one spelled over several byte
    positions (Llama's vocabulary, which OpenVLA uses, has most English words as single pieces).
    Raises ValueError when the model's `vocab_size` (its embedding rows) cannot hold the new ids."""
    for word in words:
        if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
            raise ValueError(f"tokenizer word {word!r}: give single words without spaces")
    new = [w for w in dict.fromkeys(words) if w not in tokenizer.get_vocab()]
    if len(tokenizer) + len(new) > vocab_size:
        raise ValueError(f"{len(new)} new word tokens after the tokenizer's {len(tokenizer)} exceed the model's "
                         f"vocab_size {vocab_size}: list fewer words or use a model with a larger vocabulary")
    return tokenizer.add_tokens([AddedToken(w, single_word=True) for w in new])


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer files in ``directory`` (local only; HF offline mode is set).

    Never interactive and never runs code from the directory: an OpenVLA checkpoint's config.json names its
    own Python classes (``auto_map``), and AutoTokenizer would read it through AutoConfig and ask on the
    terminal whether to run them. The tokenizer needs no model config, so an empty one is passed, and
    remote code is refused (a tokenizer that exists only as the directory's code is an error)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file() and not (directory / "tokenizer.model").is_file():
        raise FileNotFoundError(f"no tokenizer in {directory}: expected tokenizer.json (or tokenizer.model); "
                                "save one with PixelVLAPolicy.save_pretrained or tokenizer.save_pretrained")
    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False,
                                        config=PretrainedConfig())
    if tok.pad_token is None:  # Llama-2 has none; OpenVLA adds <PAD> (id 32000)
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.padding_side = "right"
    return tok
