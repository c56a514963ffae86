"""Segmentation, format sniffing and the sample images, on synthetic pixels (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from airflow_provider_hitpaw.emulator import imaging

BG = (235, 237, 240)


def canvas(height: int = 120, width: int = 160, colour: tuple[int, int, int] = BG) -> np.ndarray:
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = colour
    return img


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def encode(pixels: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **kwargs)
    return out.getvalue()


def test_rectangle_on_plain_background() -> None:
    img = canvas()
    img[30:90, 40:120] = (200, 30, 40)
    truth = np.zeros(img.shape[:2], dtype=bool)
    truth[30:90, 40:120] = True
    mask = imaging.segment(img)
    assert mask.dtype == np.bool_
    assert mask.shape == truth.shape
    # The majority filter may round the four corner pixels, nothing else.
    assert (mask ^ truth).sum() <= 4


def test_background_coloured_hole_inside_the_subject_stays_subject() -> None:
    img = canvas()
    img[20:100, 30:130] = (30, 60, 160)
    img[45:75, 60:100] = BG  # same colour as the background, but enclosed
    mask = imaging.segment(img)
    assert mask[45:75, 60:100].all()
    assert not mask[:10].any()
    assert mask[20:100, 30:130].sum() >= 80 * 100 - 4


def test_background_coloured_notch_open_to_the_border_is_background() -> None:
    img = canvas()
    img[20:100, 30:130] = (30, 60, 160)
    img[50:70, 30:80] = BG  # a bay reaching the subject's edge: connected to the outside
    mask = imaging.segment(img)
    assert not mask[52:68, 32:78].any()


def test_subject_touching_the_border() -> None:
    img = canvas()
    img[60:, 50:110] = (20, 120, 60)  # cut off by the bottom edge, like shoulders in a portrait
    truth = np.zeros(img.shape[:2], dtype=bool)
    truth[60:, 50:110] = True
    assert iou(imaging.segment(img), truth) > 0.97


def test_noisy_background_is_cleaned() -> None:
    rng = np.random.default_rng(1)
    noisy = canvas().astype(np.int16) + rng.normal(0, 4, size=(120, 160, 3)).astype(np.int16)
    img = np.clip(noisy, 0, 255).astype(np.uint8)
    img[30:90, 40:120] = (150, 40, 160)
    truth = np.zeros(img.shape[:2], dtype=bool)
    truth[30:90, 40:120] = True
    assert iou(imaging.segment(img), truth) > 0.98


def test_transparent_pixels_are_background() -> None:
    img = canvas()
    img[30:90, 40:120] = (200, 30, 40)
    img[0:30] = (10, 10, 10)  # dark but fully transparent
    alpha = np.full(img.shape[:2], 255, dtype=np.uint8)
    alpha[0:30] = 0
    mask = imaging.segment(img, alpha)
    assert not mask[0:28].any()
    assert mask[32:88, 42:118].all()


def test_empty_image_has_no_subject() -> None:
    assert not imaging.segment(canvas()).any()


def test_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected"):
        imaging.segment(np.zeros((10, 10), dtype=np.uint8))


def test_connected_to_border_follows_winding_paths() -> None:
    # A corridor that zig-zags from the border into the middle: row and column passes must alternate.
    cand = np.zeros((50, 50), dtype=bool)
    cand[0, 5] = True
    cand[0:10, 5] = True
    cand[9, 5:40] = True
    cand[9:30, 39] = True
    cand[29, 10:40] = True
    cand[29:45, 10] = True
    island = np.zeros_like(cand)
    island[40:45, 30:35] = True
    reached = imaging.connected_to_border(cand | island)
    assert reached[44, 10]
    assert not reached[island].any()
    assert (reached == cand).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    top=st.integers(5, 50),
    left=st.integers(5, 60),
    height=st.integers(10, 60),
    width=st.integers(10, 90),
    colour=st.tuples(st.integers(0, 160), st.integers(0, 160), st.integers(0, 255)),
)
def test_any_rectangle_far_from_the_background_is_found(
    top: int, left: int, height: int, width: int, colour: tuple[int, int, int]
) -> None:
    img = canvas()
    img[top : top + height, left : left + width] = colour
    truth = np.zeros(img.shape[:2], dtype=bool)
    truth[top : top + height, left : left + width] = True
    assert iou(imaging.segment(img), truth) > 0.95


def test_a_1024_square_is_segmented_and_rendered_whole() -> None:
    """How fast is measured by ``benchmarks/emulator_imaging.py``, not here."""
    img = canvas(1024, 1024)
    yy, xx = np.mgrid[0:1024, 0:1024]
    disc = (yy - 512) ** 2 + (xx - 480) ** 2 < 300**2
    img[disc] = (180, 40, 60)
    img[480:540, 400:560] = BG  # background-coloured, but inside the subject: kept
    mask = imaging.segment(img)
    assert iou(mask, disc) > 0.99
    result = imaging.render_results(imaging.DecodedImage("png", img, None), mask)
    assert result.width == result.height == 1024
    assert result.subject_pixels == int(mask.sum())


# --- sniffing and decoding


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp")],
)
def test_sniff_format_by_magic_bytes(fmt: str, expected: str) -> None:
    assert imaging.sniff_format(encode(canvas(8, 8), fmt)) == expected


@pytest.mark.parametrize("data", [b"", b"hello", b"RIFF\x00\x00\x00\x00WAVE", b"<html></html>"])
def test_sniff_format_unknown(data: bytes) -> None:
    assert imaging.sniff_format(data) is None


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decode_supported_formats(fmt: str) -> None:
    decoded = imaging.decode_image(encode(canvas(30, 40), fmt))
    assert decoded.size == (40, 30)
    assert decoded.rgb.shape == (30, 40, 3)


def test_decode_keeps_alpha() -> None:
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:5, :, 3] = 0
    decoded = imaging.decode_image(encode(rgba, "PNG"))
    assert decoded.alpha is not None
    assert decoded.alpha[0, 0] == 0
    assert decoded.alpha[9, 0] == 255


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"definitely not an image", "not an image"),
        (encode(canvas(8, 8), "GIF"), "unsupported image format: gif"),
        (encode(canvas(64, 64), "JPEG")[:40], "cannot decode jpeg"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "cannot decode png"),
    ],
)
def test_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(imaging.ImageError, match=message):
        imaging.segment_bytes(data)


def test_segment_bytes_outputs() -> None:
    img = canvas()
    img[30:90, 40:120] = (200, 30, 40)
    result = imaging.segment_bytes(encode(img, "PNG"))
    cutout = Image.open(io.BytesIO(result.cutout_png))
    mask = Image.open(io.BytesIO(result.mask_png))
    assert (cutout.mode, mask.mode) == ("RGBA", "L")
    assert cutout.size == mask.size == (160, 120)
    alpha = np.asarray(cutout)[..., 3]
    assert set(np.unique(alpha)) == {0, 255}
    assert (alpha == np.asarray(mask)).all()
    assert tuple(np.asarray(cutout)[60, 80]) == (200, 30, 40, 255)


# --- samples


def test_samples_are_deterministic_and_match_their_drawing() -> None:
    samples = imaging.sample_images()
    assert {"shoe.jpg", "portrait.png", "product.webp", "mug.jpg", "broken.jpg"} <= set(samples)
    assert imaging.sample_images() is samples  # generated once
    for sample in samples.values():
        if sample.expected_status == "ERROR":
            with pytest.raises(imaging.ImageError):
                imaging.segment_bytes(sample.data)
            continue
        result = imaging.segment_bytes(sample.data)
        assert (result.width, result.height) == (sample.width, sample.height)
        assert 0.9 < result.subject_pixels / sample.subject_pixels < 1.1, sample.name
        assert 400 <= max(sample.width, sample.height) <= 700


def test_sample_formats_are_what_their_names_say_except_the_disguised_one() -> None:
    samples = imaging.sample_images()
    assert imaging.sniff_format(samples["shoe.jpg"].data) == "jpeg"
    assert imaging.sniff_format(samples["portrait.png"].data) == "png"
    assert imaging.sniff_format(samples["product.webp"].data) == "webp"
    assert imaging.sniff_format(samples["disguised.png"].data) == "jpeg"
    assert imaging.sniff_format(samples["broken.jpg"].data) is None
