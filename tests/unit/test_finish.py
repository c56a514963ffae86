"""Storefront finishes (_finish.py): options checked at parse, pixels with known answers, stable bytes."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageDraw, ImageFile

from airflow_provider_hitpaw._finish import (
    Finish,
    UnusableImageError,
    apply_finish,
    apply_finishes,
    crop_box,
    finish_name,
    parse_finishes,
)
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError

FRAME = (400, 300)
SUBJECT = (100, 50, 200, 150)
RED = (200, 30, 40)


def encoded(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pair(
    frame: tuple[int, int] = FRAME, box: tuple[int, int, int, int] | None = SUBJECT, **save: Any
) -> tuple[bytes, bytes]:
    """A cut-out whose subject is an opaque rectangle at ``box`` (right, bottom exclusive), and its mask."""
    cutout = Image.new("RGBA", frame, (0, 0, 0, 0))
    mask = Image.new("L", frame, 0)
    if box is not None:
        corners = (box[0], box[1], box[2] - 1, box[3] - 1)
        ImageDraw.Draw(cutout).rectangle(corners, fill=(*RED, 255))
        ImageDraw.Draw(mask).rectangle(corners, fill=255)
    return encoded(cutout, **save), encoded(mask)


def photo(frame: tuple[int, int] = FRAME, fmt: str = "JPEG", **save: Any) -> bytes:
    """An original photo: left half green, right half blue."""
    image = Image.new("RGB", frame, (0, 160, 0))
    ImageDraw.Draw(image).rectangle((frame[0] // 2, 0, frame[0], frame[1]), fill=(0, 0, 220))
    return encoded(image, fmt, **save)


def near(pixel: Any, colour: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=False))


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` and holds almost no data: any decode would fail."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# --- geometry ----------------------------------------------------------------------------------------


def test_crop_with_pixel_margin_keeps_the_box_plus_margin() -> None:
    cutout, mask = pair()
    image = decoded(apply_finish(Finish("c", crop=True, margin="10px"), cutout, mask))
    assert image.size == (120, 120)
    assert image.mode == "RGBA"
    assert image.getbbox() == (10, 10, 110, 110)
    assert image.getpixel((10, 10)) == (*RED, 255)
    assert image.getpixel((9, 9))[3] == 0


def test_integer_margin_is_pixels() -> None:
    cutout, mask = pair()
    assert decoded(apply_finish(Finish("c", crop=True, margin=10), cutout, mask)).size == (120, 120)


def test_percent_margin_is_a_share_of_the_box_larger_side() -> None:
    cutout, mask = pair(box=(100, 50, 300, 150))  # 200 x 100: 5% of 200 is 10 px
    image = decoded(apply_finish(Finish("c", crop=True, margin="5%"), cutout, mask))
    assert image.size == (220, 120)


def test_margin_is_clamped_to_the_frame() -> None:
    cutout, mask = pair(box=(0, 0, 50, 50))
    image = decoded(apply_finish(Finish("c", crop=True, margin=10), cutout, mask))
    assert image.size == (60, 60)
    assert image.getbbox() == (0, 0, 50, 50)


def test_an_empty_mask_keeps_the_whole_frame() -> None:
    cutout, mask = pair(box=None)
    image = decoded(apply_finish(Finish("c", crop=True, margin=10), cutout, mask))
    assert image.size == FRAME


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    margin=st.integers(min_value=0, max_value=40),
)
def test_crop_box_is_the_rectangle_plus_margin_clamped(data: st.DataObject, margin: int) -> None:
    width, height = 80, 60
    left = data.draw(st.integers(0, width - 1))
    top = data.draw(st.integers(0, height - 1))
    right = data.draw(st.integers(left + 1, width))
    bottom = data.draw(st.integers(top + 1, height))
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle((left, top, right - 1, bottom - 1), fill=255)
    expected = (
        max(0, left - margin),
        max(0, top - margin),
        min(width, right + margin),
        min(height, bottom + margin),
    )
    finish = Finish("c", crop=True, margin=margin)
    assert crop_box(finish, mask, (width, height)) == expected
    cutout, mask_bytes = pair((width, height), (left, top, right, bottom))
    image = decoded(apply_finish(finish, cutout, mask_bytes))
    assert image.size == (expected[2] - expected[0], expected[3] - expected[1])


def test_soft_mask_edges_count_from_the_midpoint() -> None:
    mask = Image.new("L", FRAME, 0)
    ImageDraw.Draw(mask).rectangle((100, 50, 199, 149), fill=128)
    ImageDraw.Draw(mask).rectangle((10, 10, 30, 30), fill=127)  # a faint halo: not subject
    assert crop_box(Finish("c", crop=True), mask, FRAME) == SUBJECT


def test_canvas_fill_puts_the_subject_larger_side_at_its_share_centred() -> None:
    cutout, mask = pair()
    finish = Finish("c", crop=True, canvas="1000x1000", fill=0.85)
    image = decoded(apply_finish(finish, cutout, mask))
    assert image.size == (1000, 1000)
    assert image.getbbox() == (75, 75, 925, 925)
    assert image.getpixel((75, 75)) == (*RED, 255)
    assert image.getpixel((924, 924)) == (*RED, 255)
    assert image.getpixel((74, 500))[3] == 0
    assert image.getpixel((925, 500))[3] == 0


def test_canvas_fill_is_limited_by_the_tighter_side() -> None:
    cutout, mask = pair(box=(100, 100, 300, 200))  # 200 x 100
    image = decoded(apply_finish(Finish("c", crop=True, canvas="1000x1000", fill=0.85), cutout, mask))
    assert image.getbbox() == (75, 287, 925, 712)  # 850 x 425, centred


def test_aspect_canvas_takes_its_size_from_the_subject_and_fill() -> None:
    cutout, mask = pair()
    square = decoded(apply_finish(Finish("c", crop=True, canvas="1:1", fill=0.5), cutout, mask))
    assert square.size == (200, 200)
    assert square.getbbox() == (50, 50, 150, 150)
    portrait = decoded(apply_finish(Finish("c", crop=True, canvas="4:5"), cutout, mask))
    assert portrait.size == (100, 125)
    assert portrait.getbbox() == (0, 12, 100, 112)


def test_aspect_canvas_never_exceeds_the_largest_side() -> None:
    cutout, mask = pair(frame=(1200, 1000), box=(0, 0, 1200, 1000))
    image = decoded(apply_finish(Finish("c", canvas="10:1", fill=0.1), cutout, mask))
    assert image.size == (12000, 1200)


def test_canvas_without_crop_fits_the_whole_frame() -> None:
    cutout, mask = pair()
    image = decoded(apply_finish(Finish("c", canvas="800x800"), cutout, mask))
    assert image.size == (800, 800)
    # The frame becomes 800 x 600 at (0, 100); its hard subject edges ring a little once enlarged.
    solid = image.getchannel("A").point(lambda alpha: 255 if alpha > 127 else 0)
    assert solid.getbbox() == (200, 200, 400, 400)


def test_max_side_downsizes_last_and_never_upsizes() -> None:
    cutout, mask = pair()
    assert decoded(apply_finish(Finish("c", max_side=100), cutout, mask)).size == (100, 75)
    assert decoded(apply_finish(Finish("c", max_side=1000), cutout, mask)).size == FRAME
    finish = Finish("c", crop=True, canvas="2000x2000", fill=0.85, max_side=400)
    image = decoded(apply_finish(finish, cutout, mask))
    assert image.size == (400, 400)
    assert image.getbbox() == (30, 30, 370, 370)


# --- backgrounds and formats ---------------------------------------------------------------------------


def test_white_jpeg_has_white_corners_and_the_subject_inside() -> None:
    cutout, mask = pair()
    finish = Finish("storefront", background="white", crop=True, canvas="2000x2000", fill=0.85, format="jpeg")
    image = decoded(apply_finish(finish, cutout, mask))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (2000, 2000))
    for corner in ((0, 0), (1999, 0), (0, 1999), (1999, 1999), (100, 1000)):
        assert near(image.getpixel(corner), (255, 255, 255), 3)
    assert near(image.getpixel((1000, 1000)), RED)


def test_hex_colour_background_is_exact_in_png() -> None:
    cutout, mask = pair()
    image = decoded(apply_finish(Finish("c", background="#123"), cutout, mask))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0x11, 0x22, 0x33)
    assert image.getpixel((150, 100)) == RED


def test_half_transparent_edges_blend_with_the_background() -> None:
    cutout = Image.new("RGBA", FRAME, (0, 0, 0, 0))
    ImageDraw.Draw(cutout).rectangle((100, 50, 199, 149), fill=(0, 0, 0, 128))
    mask = Image.new("L", FRAME, 0)
    image = decoded(apply_finish(Finish("c", background="white"), encoded(cutout), encoded(mask)))
    assert near(image.getpixel((150, 100)), (127, 127, 127), 2)


def test_blur_background_comes_from_the_original_photo() -> None:
    cutout, mask = pair()
    finish = Finish("c", background="blur")
    image = decoded(apply_finish(finish, cutout, mask, photo()))
    assert image.size == FRAME
    assert near(image.getpixel((5, 150)), (0, 160, 0), 25)  # the photo's left half, blurred
    assert near(image.getpixel((395, 150)), (0, 0, 220), 25)
    assert image.getpixel((150, 100)) == RED
    other = photo()[:]
    swapped = Image.new("RGB", FRAME, (250, 250, 0))
    assert apply_finish(finish, cutout, mask, encoded(swapped, "JPEG")) != apply_finish(
        finish, cutout, mask, other
    )


def test_blur_with_crop_stays_aligned_and_with_canvas_covers_it() -> None:
    cutout, mask = pair(box=(150, 100, 190, 140))  # left of the photo's middle: green behind it
    cropped = decoded(
        apply_finish(Finish("c", background="blur", crop=True, margin=20), cutout, mask, photo())
    )
    assert cropped.size == (80, 80)
    assert near(cropped.getpixel((2, 40)), (0, 160, 0), 40)
    canvas = Finish("c", background="blur", crop=True, canvas="1000x500", fill=0.5, format="jpeg")
    image = decoded(apply_finish(canvas, cutout, mask, photo()))
    assert image.size == (1000, 500)
    assert near(image.getpixel((5, 250)), (0, 160, 0), 30)
    assert near(image.getpixel((995, 250)), (0, 0, 220), 30)


def test_blur_turns_an_exif_rotated_photo_upright() -> None:
    upright = Image.new("RGB", FRAME, (0, 160, 0))
    ImageDraw.Draw(upright).rectangle((200, 0, 400, 300), fill=(0, 0, 220))
    raw = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    cutout, mask = pair()
    image = decoded(
        apply_finish(Finish("c", background="blur"), cutout, mask, encoded(raw, "JPEG", exif=exif))
    )
    assert near(image.getpixel((5, 150)), (0, 160, 0), 25)
    assert near(image.getpixel((395, 150)), (0, 0, 220), 25)


def test_blur_without_the_original_is_refused() -> None:
    cutout, mask = pair()
    with pytest.raises(HitPawConfigurationError, match=r"blur.*original"):
        apply_finish(Finish("c", background="blur"), cutout, mask)


def test_transparent_webp_keeps_alpha_and_lossless_keeps_it_exactly() -> None:
    cutout, mask = pair()
    lossy = decoded(apply_finish(Finish("thumb", format="webp", max_side=200), cutout, mask))
    assert (lossy.format, lossy.mode, lossy.size) == ("WEBP", "RGBA", (200, 150))
    assert lossy.getpixel((0, 0))[3] == 0
    exact = decoded(apply_finish(Finish("c", format="webp", lossless=True), cutout, mask))
    assert exact.getchannel("A").tobytes() == decoded(cutout).getchannel("A").tobytes()
    assert exact.getpixel((150, 100)) == (*RED, 255)


def test_jpeg_quality_changes_the_bytes() -> None:
    cutout, mask = pair()
    low = apply_finish(Finish("c", background="white", format="jpeg", quality=20), cutout, mask)
    default = apply_finish(Finish("c", background="white", format="jpeg"), cutout, mask)
    ninety = apply_finish(Finish("c", background="white", format="jpeg", quality=90), cutout, mask)
    assert default == ninety != low


def test_the_cutout_colour_profile_is_kept() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cutout, mask = pair(icc_profile=profile)
    for finish in (Finish("a"), Finish("b", background="white", format="jpeg"), Finish("c", format="webp")):
        assert decoded(apply_finish(finish, cutout, mask)).info.get("icc_profile") == profile


@pytest.mark.parametrize(
    "finish",
    [
        Finish("a", crop=True, canvas="2000x2000", fill=0.85, background="white", format="jpeg"),
        Finish("b", format="webp", max_side=120),
        Finish("c", format="webp", lossless=True, crop=True, margin="5%"),
        Finish("d", background="blur", canvas="4:5", crop=True, fill=0.9),
        Finish("e", background="grey", canvas="640x480", fill=0.7),
    ],
    ids=lambda f: f.name,
)
def test_the_same_inputs_give_the_same_bytes(finish: Finish) -> None:
    cutout, mask = pair()
    assert apply_finish(finish, cutout, mask, photo()) == apply_finish(finish, cutout, mask, photo())


def test_apply_finishes_gives_each_finish_its_own_bytes_from_one_decode() -> None:
    cutout, mask = pair()
    finishes = parse_finishes(
        {
            "storefront": {
                "background": "white",
                "crop": True,
                "canvas": "1:1",
                "fill": 0.85,
                "format": "jpeg",
            },
            "thumb": {"format": "webp", "max_side": 100},
            "soft": {"background": "blur", "crop": True, "margin": "10%"},
            "wide": {"background": "blur", "canvas": "16:9"},
        }
    )
    made = apply_finishes(finishes, cutout, mask, photo())
    assert list(made) == ["storefront", "thumb", "soft", "wide"]
    for finish in finishes:
        assert made[finish.name] == apply_finish(finish, cutout, mask, photo())


def test_apply_finishes_refuses_what_apply_finish_would() -> None:
    cutout, mask = pair()
    with pytest.raises(HitPawConfigurationError, match="share a name"):
        apply_finishes([Finish("thumb"), Finish("Thumb")], cutout, mask)
    with pytest.raises(HitPawConfigurationError, match=r"'soft'.*original"):
        apply_finishes([Finish("thumb"), Finish("soft", background="blur")], cutout, mask)
    assert apply_finishes([], cutout, mask) == {}


# --- inputs refused ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("which", ["cutout", "mask", "original"])
def test_over_50_megapixels_is_refused_from_the_header(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: Any) -> None:
        raise AssertionError("pixels were decoded")

    cutout, mask = pair()
    inputs = {"cutout": cutout, "mask": mask, "original": photo()}
    inputs[which] = huge_png_header(10_000, 10_000)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    finish = Finish("c", background="blur")
    with pytest.raises(UnusableImageError, match="10000x10000, over 50 megapixels"):
        apply_finish(finish, inputs["cutout"], inputs["mask"], inputs["original"])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pillow_limit_is_left_as_it_was() -> None:
    before = Image.MAX_IMAGE_PIXELS
    _, mask = pair()
    with pytest.raises(UnusableImageError):
        apply_finish(Finish("c"), huge_png_header(10_000, 10_000), mask)
    assert before == Image.MAX_IMAGE_PIXELS


def test_a_bomb_over_pillow_own_limit_is_refused_the_same_way() -> None:
    _, mask = pair()
    with pytest.raises(UnusableImageError, match="over 50 megapixels"):
        apply_finish(Finish("c"), huge_png_header(20_000, 20_000), mask)


@pytest.mark.parametrize(
    ("cutout", "match"),
    [
        (b"not an image", "not a readable PNG image"),
        (huge_png_header(40, 40), "could not be decoded"),
        (encoded(Image.new("RGB", (4, 4)), "JPEG"), "not a readable PNG image"),
    ],
)
def test_unreadable_inputs_are_refused(cutout: bytes, match: str) -> None:
    _, mask = pair()
    with pytest.raises(UnusableImageError, match=match):
        apply_finish(Finish("c"), cutout, mask)


def test_unusable_image_error_is_a_value_error_and_not_retryable() -> None:
    error = UnusableImageError("the mask is not readable")
    assert isinstance(error, ValueError)
    assert not error.retryable


# --- options -------------------------------------------------------------------------------------------

STOREFRONT = {
    "background": "white",
    "crop": True,
    "canvas": "2000x2000",
    "fill": 0.85,
    "format": "jpeg",
    "quality": 90,
}


def test_parse_accepts_every_shape() -> None:
    assert parse_finishes(None) == ()
    assert parse_finishes({}) == ()
    assert parse_finishes([]) == ()
    (one,) = parse_finishes(STOREFRONT)
    assert one.name == "finish"
    assert one == Finish("finish", **STOREFRONT)  # type: ignore[arg-type]
    by_name = parse_finishes({"storefront": STOREFRONT, "thumb": {"format": "webp", "max_side": 400}})
    assert [f.name for f in by_name] == ["storefront", "thumb"]
    listed = parse_finishes([{"name": "storefront", **STOREFRONT}, {"name": "thumb", "format": "webp"}])
    assert [f.name for f in listed] == ["storefront", "thumb"]
    assert parse_finishes(Finish("x")) == (Finish("x"),)
    assert parse_finishes([Finish("x"), {"name": "y"}]) == (Finish("x"), Finish("y"))
    assert parse_finishes({"x": Finish("x")}) == (Finish("x"),)
    assert parse_finishes({"x": {"name": "x"}}) == (Finish("x"),)


def test_a_finish_goes_through_json_and_back() -> None:
    finishes = parse_finishes({"storefront": STOREFRONT, "thumb": {"format": "webp", "max_side": 400}})
    text = json.dumps([finish.as_dict() for finish in finishes])
    assert parse_finishes(json.loads(text)) == finishes


def test_spellings_of_one_output_are_stored_one_way() -> None:
    finish = Finish("a", background=" White ", format="JPG", fill=1)
    assert (finish.background, finish.format, finish.fill, finish.extension) == ("white", "jpeg", 1.0, "jpg")
    assert Finish("a", format="webp").extension == "webp"
    assert Finish("a").extension == "png"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"colour": "white"}, "unknown option colour"),
        ({"crop": "yes"}, "crop must be true or false"),
        ({"crop": 1}, "crop must be true or false"),
        ({"lossless": "true", "format": "webp"}, "lossless must be true or false"),
        ({"fill": True, "canvas": "1:1"}, "fill must be a number"),
        ({"fill": "0.85", "canvas": "1:1"}, "fill must be a number"),
        ({"quality": 90.0, "format": "webp"}, "quality must be a whole number"),
        ({"max_side": "400"}, "max_side must be a whole number"),
        ({"margin": 1.5, "crop": True}, "margin must be pixels"),
        ({"margin": True, "crop": True}, "margin must be pixels"),
        ({"canvas": 2000}, "canvas must be a size"),
        ({"background": 0}, "background must be a string"),
        ({"format": None}, "format must be a string"),
        ({"name": 3}, "name must be a string"),
        ({"name": "store front"}, "name must be 1 to 40"),
        ({"name": "x" * 41}, "name must be 1 to 40"),
        ({"name": ""}, "name must be 1 to 40"),
        ({"name": "a.b"}, "name must be 1 to 40"),
        ({"name": "thumb_MASK"}, "must not end in '_mask'"),
        ({"format": "gif"}, "format must be one of png, jpeg, webp"),
        ({"format": "jpeg"}, "jpeg has no transparency"),
        ({"background": "purple"}, "background must be"),
        ({"background": "#12"}, "background must be"),
        ({"background": "#gggggg"}, "background must be"),
        ({"fill": 0, "canvas": "1:1"}, "fill must be above 0"),
        ({"fill": 1.5, "canvas": "1:1"}, "fill must be above 0"),
        ({"fill": float("nan"), "canvas": "1:1"}, "fill must be above 0"),
        ({"fill": 0.85}, "fill needs a canvas"),
        ({"canvas": "2000x"}, "canvas must be a size"),
        ({"canvas": "big"}, "canvas must be a size"),
        ({"canvas": "13000x2000"}, "canvas sides must be 16 to 12000"),
        ({"canvas": "2000x8"}, "canvas sides must be 16 to 12000"),
        ({"canvas": "100:1"}, "canvas aspect must be positive and at most 10:1"),
        ({"canvas": "0:1"}, "canvas aspect must be positive"),
        ({"quality": 80}, "quality does not apply to png"),
        ({"quality": 0, "format": "webp"}, "quality must be 1 to 100"),
        ({"quality": 101, "format": "webp"}, "quality must be 1 to 100"),
        ({"quality": 80, "format": "webp", "lossless": True}, "quality does not apply to lossless"),
        ({"lossless": True}, "lossless applies to webp only"),
        ({"lossless": True, "format": "jpeg", "background": "white"}, "lossless applies to webp only"),
        ({"max_side": 15}, "max_side must be 16 to 12000"),
        ({"max_side": 12001}, "max_side must be 16 to 12000"),
        ({"margin": "12pt", "crop": True}, "margin must be pixels"),
        ({"margin": "1.5px", "crop": True}, "margin must be whole pixels"),
        ({"margin": -1, "crop": True}, "margin must be 0 to 12000 px or 0 to 100%"),
        ({"margin": "101%", "crop": True}, "margin must be 0 to 12000 px or 0 to 100%"),
        ({"margin": "5%"}, "margin needs crop=True"),
        ({"margin": 10}, "margin needs crop=True"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, Any], match: str) -> None:
    options = {"name": "thumb", **options}
    with pytest.raises(HitPawConfigurationError, match=match) as caught:
        parse_finishes([options])
    assert caught.value.field == "finish"
    if isinstance(options["name"], str) and options["name"]:
        assert repr(options["name"]) in str(caught.value)


def test_a_finish_built_directly_is_checked_too() -> None:
    with pytest.raises(HitPawConfigurationError, match="jpeg has no transparency"):
        Finish("storefront", format="jpeg")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([{"name": "thumb"}, {"name": "Thumb"}], "name is used twice"),
        ([{"format": "webp"}, {"format": "png"}], "every finish needs a name"),
        ({"thumb": {"name": "other"}}, "name is given twice"),
        ({"thumb": Finish("other")}, "is given as a finish named 'other'"),
        ("thumb", "finishes must be a dict, a list of dicts"),
        ([["thumb"]], "must be a dict of options"),
        ({3: {"format": "webp"}}, "a finish's name must be a string"),
    ],
)
def test_bad_collections_are_refused(value: Any, match: str) -> None:
    with pytest.raises(HitPawConfigurationError, match=match):
        parse_finishes(value)


def test_digest_changes_with_the_pixels_only() -> None:
    storefront = Finish("storefront", **STOREFRONT)  # type: ignore[arg-type]
    assert storefront.digest() == Finish("storefront", **STOREFRONT).digest()  # type: ignore[arg-type]
    assert storefront.digest() == Finish("renamed", **STOREFRONT).digest()  # type: ignore[arg-type]
    same = {**STOREFRONT, "background": "#FFF", "quality": None, "format": "jpg"}
    assert storefront.digest() == Finish("storefront", **same).digest()  # type: ignore[arg-type]
    for change in ({"fill": 0.8}, {"quality": 89}, {"background": "black"}, {"max_side": 1000}):
        assert storefront.digest() != Finish("s", **{**STOREFRONT, **change}).digest()  # type: ignore[arg-type]
    # Stable across processes and releases (a change here means every kept finish is made again).
    assert storefront.digest() == "13bf99d50df53834"
    assert len(storefront.digest()) == 16


def test_parsing_imports_no_pixel_library() -> None:
    code = (
        "import json, sys\n"
        "from airflow_provider_hitpaw._finish import parse_finishes, finish_name\n"
        "import airflow_provider_hitpaw._quality\n"
        "(f,) = parse_finishes({'name': 's', 'background': 'white', 'format': 'jpeg', 'canvas': '1:1',"
        " 'fill': 0.85})\n"
        "f.digest(); finish_name('main.png', f)\n"
        "print(json.dumps(sorted(m for m in ('PIL', 'numpy') if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cutout", "finish", "expected"),
    [
        ("main.png", Finish("storefront", background="white", format="jpeg"), "main.storefront.jpg"),
        ("main-3f0c9a1b2c4d.png", Finish("storefront", background="white", format="jpeg"), None),
        ("shoes/red/main.png", Finish("thumb", format="webp"), "shoes/red/main.thumb.webp"),
        ("main.png", Finish("big"), "main.big.png"),
    ],
)
def test_finish_names_sit_beside_the_cutout(cutout: str, finish: Finish, expected: str | None) -> None:
    expected = expected or "main-3f0c9a1b2c4d.storefront.jpg"
    assert finish_name(cutout, finish) == expected


@pytest.mark.parametrize("cutout", ["main_mask.png", "main-3f0c9a1b2c4d_mask.png", "main.jpg", "main"])
def test_finish_names_need_a_cutout_name(cutout: str) -> None:
    with pytest.raises(ValueError, match="not a cut-out's name"):
        finish_name(cutout, Finish("thumb"))


@settings(max_examples=100, deadline=None)
@given(name=st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True))
def test_no_finish_is_ever_named_like_a_mask(name: str) -> None:
    try:
        finish = Finish(name)
    except HitPawConfigurationError:
        assert name.casefold().endswith("_mask")
        return
    assert not finish_name("main.png", finish).endswith("_mask.png")
