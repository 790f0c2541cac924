"""The packed float16 encodings a video index stores for the exact re-rank."""

import pyarrow as pa
import pytest
import torch

from glscl.model import VideoEncoding
from schemas.tables import encodings_width
from workers.index.packed_encodings import pack_encodings, packed_slots, unpack_encodings


def test_packed_encodings_round_trip_frames_concepts_and_mask():
    frames, local = torch.randn(3, 5, 4), torch.randn(3, 2, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    column = pack_encodings(VideoEncoding(frames, mask, local))
    assert column.type.list_size == encodings_width(5, 2, 4) == 5 * 4 + 2 * 4 + 5
    field = pa.field("encodings", column.type)
    assert packed_slots(field, 2, 4) == 5
    video = unpack_encodings(column, 5, 2, 4)
    assert torch.equal(video.mask, mask)
    assert torch.equal(video.frames, frames.half().float()) and torch.equal(video.local, local.half().float())
    with pytest.raises(ValueError, match="not a packing"):
        packed_slots(field, 3, 4)
