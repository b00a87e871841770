"""Caption vocabulary: tokenisation, special tokens and a JSON round trip."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(sentence: str) -> list[str]:
    """Lower-case word tokens without punctuation.

    Example:
        >>> tokenize("A red circle, moving LEFT.")
        ['a', 'red', 'circle', 'moving', 'left']
    """
    return _TOKEN.findall(sentence.lower())


@dataclass(frozen=True)
class Vocabulary:
    """Word <-> id mapping; ids 0..3 are ``<pad> <bos> <eos> <unk>``.

    Example:
        >>> vocab = Vocabulary.build(["a red circle moves left"])
        >>> vocab.decode(vocab.encode("a red circle moves left"))
        'a red circle moves left'
    """

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.words[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {self.words[:4]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("vocabulary has duplicate words")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    @classmethod
    def build(cls, sentences: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Build from training sentences; words seen fewer than ``min_count`` times map to unk."""
        counts = Counter(token for s in sentences for token in tokenize(s))
        kept = sorted(w for w, n in counts.items() if n >= min_count and w not in SPECIALS)
        return cls(SPECIALS + tuple(kept))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, sentence: str, max_len: int | None = None) -> list[int]:
        """Token ids of ``sentence`` followed by ``<eos>`` (no ``<bos>``), at most ``max_len``."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        ids = [index.get(token, UNK_ID) for token in tokenize(sentence)]
        if max_len is not None:
            ids = ids[: max_len - 1]
        return ids + [EOS_ID]

    def decode(self, ids: Sequence[int]) -> str:
        """Sentence for ``ids``, stopping at ``<eos>`` and skipping ``<pad>``/``<bos>``."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            words.append(self.words[i] if 0 <= i < len(self.words) else UNK)
        return " ".join(words)

    def to_json(self) -> list[str]:
        """JSON-serialisable form (the word list, in id order)."""
        return list(self.words)

    @classmethod
    def from_json(cls, words: Sequence[str]) -> Vocabulary:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(str(w) for w in words))
