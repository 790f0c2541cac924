"""The query side of a search: a checkpoint's CLIP text tower and GLSCL text head, which turn a query's text into
the TextEncoding every search stage reads. Apart from the Searcher so that a sharded search encodes a query once, in
the process that received it, and sends the shards its encoding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from glscl.backbone import Backbone
from glscl.model import GLSCL, TextEncoding


class SearchError(ValueError):
    """A query that cannot be answered as asked: empty text, k out of range, bad filter, mismatched index."""


class QueryEncoder:
    """Encodes query text with one checkpoint's head and backbone (None: queries arrive encoded)."""

    def __init__(self, model: GLSCL, backbone: Backbone | None, max_words: int, threads: int | None) -> None:
        self.model = model
        self.backbone = backbone
        self.max_words = max_words
        self.threads = threads

    @torch.inference_mode()
    def encode(self, text: str) -> TextEncoding:
        """The query's GLSCL text encoding: the CLIP text tower, then the GLSCL text side, each over the query's
        real token length only (exact, see `Backbone.text_features` and `GLSCL.encode_text`)."""
        if not text or not text.strip():
            raise SearchError("the query text is empty")
        if self.backbone is None:
            raise SearchError("this searcher has no text backbone: it only takes encoded queries")
        with torch_threads(self.threads):
            tokens = self.backbone.tokenize([text.strip()], self.max_words)
            sentence, tokens, mask = self.backbone.text_features(tokens, keep_padding=self.model.encodes_padding)
            return self.model.encode_text(sentence, tokens, mask)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` within the block (None: unchanged), restored after."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
