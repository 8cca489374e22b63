"""AP2 text handling: the labelled tweets and a word-level tokenizer."""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

_WORD = re.compile(r"[#@]?\w+(?:'\w+)?|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-case words, hashtags, mentions and punctuation: ``"No rain :)"`` -> ``no rain : )``."""
    return _WORD.findall(text.lower())


def read_tweets(path: Path) -> tuple[list[str], list[int]]:
    """Texts and 0/1 labels of a CSV with the columns ``text`` and ``raining``."""
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        if missing := {"text", "raining"} - set(reader.fieldnames or ()):
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    return [row["text"] for row in rows], [int(row["raining"]) for row in rows]


class WordTokenizer:
    """The ``vocab_size`` most frequent words of the training texts; ids padded or cut to ``max_len``."""

    PAD, UNKNOWN = 0, 1

    def __init__(self, texts: Sequence[str], vocab_size: int, max_len: int) -> None:
        counts = Counter(word for text in texts for word in words(text))
        self.vocab = ["<pad>", "<unk>", *(word for word, _ in counts.most_common(vocab_size - 2))]
        self.index = {word: i for i, word in enumerate(self.vocab)}
        self.max_len = max_len

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``(batch, max_len)`` and the mask of real tokens."""
        ids = torch.full((len(texts), self.max_len), self.PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [self.index.get(word, self.UNKNOWN) for word in words(text)][: self.max_len]
            tokens = tokens or [self.UNKNOWN]  # an empty text would leave nothing to attend to
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, ids != self.PAD
