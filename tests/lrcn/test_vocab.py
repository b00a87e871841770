from __future__ import annotations

import json

import pytest

from lrcn.vocab import EOS_ID, UNK_ID, Vocabulary, tokenize


def test_round_trip_through_json():
    vocab = Vocabulary.build(["a red circle moves left", "a blue square grows"])
    again = Vocabulary.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again == vocab
    for sentence in ["a red circle moves left", "a blue square grows"]:
        assert again.decode(again.encode(sentence)) == sentence


def test_specials_unknown_words_and_length_limit():
    vocab = Vocabulary.build(["a red circle"])
    assert vocab.words[:4] == ("<pad>", "<bos>", "<eos>", "<unk>")
    ids = vocab.encode("a green circle")
    assert ids[1] == UNK_ID and ids[-1] == EOS_ID
    assert vocab.decode(ids) == "a <unk> circle"
    assert len(vocab.encode("a red circle", max_len=2)) == 2


def test_min_count_and_tokenize():
    vocab = Vocabulary.build(["a b", "a c"], min_count=2)
    assert "a" in vocab.words and "b" not in vocab.words
    assert tokenize("A Red, circle. MOVES left!") == ["a", "red", "circle", "moves", "left"]


def test_bad_vocabulary_is_refused():
    with pytest.raises(ValueError):
        Vocabulary(("a", "b"))
