"""AP2 models: a small transformer encoder classifier, or a pretrained one (DeBERTa-v3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from maelstrom_run.core.errors import ConfigError

Encoder = Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]


class TweetClassifier(nn.Module):
    """Token and position embeddings, a transformer encoder, mean over the real tokens, 2 classes."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        d_model: int,
        heads: int,
        layers: int,
        ff_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.positions = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, 2))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        x = self.encoder(x, src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * weights).sum(dim=1) / weights.sum(dim=1))


class Pretrained(nn.Module):
    """A HuggingFace sequence classifier behind the interface of :class:`TweetClassifier`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=ids, attention_mask=mask.long()).logits


def load_pretrained(path: str, max_len: int) -> tuple[nn.Module, Encoder]:
    """The model (with a new 2-class head) and tokenizer in the local directory ``path``; nothing is downloaded."""
    try:
        import transformers
    except ImportError:
        transformers = None
    if transformers is None or not Path(path).is_dir():
        raise ConfigError(
            f"model.pretrained: fine-tuning needs the 'transformers' package and the weights at {path}"
        )
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    net = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, local_files_only=True
    )

    def encode(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
        )
        return out["input_ids"], out["attention_mask"].bool()

    return Pretrained(net), encode
