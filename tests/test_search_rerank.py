"""The re-rank scores packed encodings a block of videos at a time, with the scores of unpacking every row first."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from tiny_glscl import tiny_config

from glscl.model import GLSCL, TextEncoding, VideoEncoding
from workers.index.packed_encodings import pack_encodings, unpack_encodings
from workers.search.rerank import packed_scores


@pytest.mark.parametrize("form", ["float16", "int8"])
def test_blocked_rerank_scores_every_row_as_one_unpacked_batch(form):
    torch.manual_seed(0)
    config = tiny_config(num_queries=3, max_frames=6)
    model = GLSCL(config).eval()
    frames, local = torch.randn(50, 6, config.embed_dim), torch.randn(50, 3, config.embed_dim)
    mask = torch.arange(6) < torch.randint(1, 7, (50,))[:, None]
    packed = pack_encodings(VideoEncoding(frames * mask[..., None], mask, local), form)
    text = TextEncoding(torch.randn(1, config.embed_dim), torch.randn(1, 3, config.embed_dim))
    with torch.inference_mode():
        video = unpack_encodings(packed, 6, 3, config.embed_dim)
        pairs = TextEncoding(text.sentence.expand(50, -1), text.local.expand(50, -1, -1))
        whole = model.pair_scores(pairs, video).numpy()
    chunked = pa.chunked_array([packed.slice(0, 20), packed.slice(20)])
    for column, block in ((packed, 7), (chunked, 32), (packed, 64)):
        np.testing.assert_allclose(packed_scores(model, text, column, 6, block), whole, rtol=1e-5, atol=1e-6)
    assert packed_scores(model, text, packed.slice(0, 0), 6).shape == (0,)
