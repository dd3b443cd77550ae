"""The byte tokenizer and whole-word tokens (pixelvla_model.tokenizer)."""
import pytest

from pixelvla_model import add_words, build_byte_tokenizer, load_tokenizer
from pixelvla_model.tokenizer import BYTE_VOCAB_SIZE

COLOURS = ["red", "green", "blue", "yellow"]


def tokens(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def test_byte_tokenizer_spells_every_byte():
    tok = build_byte_tokenizer()
    assert len(tok) == BYTE_VOCAB_SIZE
    assert tokens(tok, "put the red cube") == ["<s>", "p", "u", "t", "Ġ", "t", "h", "e", "Ġ", "r", "e", "d", "Ġ", "c",
                                               "u", "b", "e"]


def test_words_become_single_tokens_only_as_whole_words(tmp_path):
    byte_ids = build_byte_tokenizer()("a tired greenish cube")["input_ids"]
    tok = build_byte_tokenizer()
    assert add_words(tok, COLOURS + ["cube", "red"], vocab_size=512) == 5
    assert [tok.convert_tokens_to_ids(w) for w in COLOURS + ["cube"]] == list(range(BYTE_VOCAB_SIZE, BYTE_VOCAB_SIZE + 5))
    assert tokens(tok, "put the red cube on the plate").count("red") == 1
    assert "cube" in tokens(tok, "put the red cube")
    # inside another word, or in another case, a word stays spelled out: the byte ids are unchanged
    assert tok("a tired greenish cube")["input_ids"][:-1] == byte_ids[:-4]  # "cube" is one token at the end
    assert "red" not in tokens(tok, "Red")
    text = "put the yellow cube in the bowl"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path)(text)["input_ids"] == tok(text)["input_ids"]
    assert add_words(load_tokenizer(tmp_path), COLOURS, vocab_size=512) == 0  # already there: ids kept


def test_words_that_do_not_fit_the_model_are_refused():
    tok = build_byte_tokenizer()
    with pytest.raises(ValueError, match="vocab_size 260"):
        add_words(tok, COLOURS, vocab_size=BYTE_VOCAB_SIZE + 1)
    with pytest.raises(ValueError, match="single words"):
        add_words(tok, ["red cube"], vocab_size=512)
    assert len(tok) == BYTE_VOCAB_SIZE  # nothing added by a refused call
