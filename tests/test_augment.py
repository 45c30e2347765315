"""Random-shift augmentation (data.augment_shift): it really shifts, per image and per seed, and keeps shapes."""
import torch
import torch.nn.functional as F

from vla.data.transforms import random_shift


def _pixels() -> torch.Tensor:
    return torch.rand((2, 2, 3, 16, 16), generator=torch.Generator().manual_seed(0))  # (B, cams, 3, H, W)


def test_random_shift_moves_the_image_and_keeps_its_shape():
    """pad=4 must return crops of the input's size that are shifted copies of it; an augmentation that always
    cropped at the centre would silently train without augmentation."""
    pixels = _pixels()
    out = random_shift(pixels, 4, torch.Generator().manual_seed(1))
    assert out.shape == pixels.shape and out.dtype == pixels.dtype
    assert not torch.equal(out, pixels)
    padded = F.pad(pixels.reshape(4, 3, 16, 16), (4,) * 4, mode="replicate")
    for i, crop in enumerate(out.reshape(4, 3, 16, 16)):  # each image is a window of its replicate-padded self
        assert any(torch.equal(crop, padded[i, :, dy:dy + 16, dx:dx + 16]) for dy in range(9) for dx in range(9))
    assert torch.equal(random_shift(pixels, 0, None), pixels)  # pad 0: augmentation off


def test_random_shift_depends_on_the_generator_seed():
    """Different seeds give different crops (each step sees new shifts); the same seed repeats them exactly."""
    pixels = _pixels()
    a = random_shift(pixels, 4, torch.Generator().manual_seed(1))
    b = random_shift(pixels, 4, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)
    assert torch.equal(a, random_shift(pixels, 4, torch.Generator().manual_seed(1)))
