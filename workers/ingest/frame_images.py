"""The sampled frames of a video as JPEG images, both ways: ingest keeps them when asked (`--keep-frames`) so that
full fine-tuning reads 0.5 to 1.7 MB per video from a table instead of decoding the whole source file in every epoch
(measured in benchmarks/RESULTS.md, "Full fine-tuning: frames kept at ingest or decoded in every epoch")."""

from __future__ import annotations

import numpy as np


def encode_jpegs(frames: np.ndarray, mask: np.ndarray, quality: int) -> list[bytes]:
    """The valid frames of [slots, S, S, 3] uint8 `frames` (where `mask` is set), in order, as JPEG files."""
    import torch  # here, not at the top: the decode stage imports this module, and torch with torchvision
    from torchvision.io import encode_jpeg  # takes 3 s to import, paid by every process that decodes

    valid = torch.from_numpy(np.ascontiguousarray(frames[mask.astype(bool)])).permute(0, 3, 1, 2).contiguous()
    if len(valid) == 0:
        return []
    return [image.numpy().tobytes() for image in encode_jpeg(list(valid), quality=quality)]


def decode_jpegs(jpegs: list[bytes], mask: np.ndarray, image_size: int) -> np.ndarray:
    """The [slots, S, S, 3] uint8 frames `encode_jpegs` stored, back in their slots (zeros where `mask` is unset)."""
    import torch
    from torchvision.io import decode_jpeg

    mask = np.asarray(mask, dtype=bool)
    if len(jpegs) != int(mask.sum()):
        raise ValueError(f"{len(jpegs)} stored images for {int(mask.sum())} valid frames")
    frames = np.zeros((len(mask), image_size, image_size, 3), dtype=np.uint8)
    if jpegs:
        images = decode_jpeg([torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs])
        frames[mask] = torch.stack(images).permute(0, 2, 3, 1).numpy()
    return frames
