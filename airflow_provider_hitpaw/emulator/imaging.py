"""Image handling for the HitPaw emulator: format sniffing, a deterministic segmentation, sample images.

The emulator does not try to be a good matting model. It has to give *plausible, repeatable* results
for the kind of picture a test or a demo uses (one subject on a plain background), fast enough that a
job on a 1024x1024 image costs well under a second, and with nothing beyond numpy and Pillow.

The segmentation works like this:

1. the background colour is the per-channel median of the border pixels (a subject touching a small
   part of the border does not move the median);
2. pixels whose colour is close to it are background *candidates*; the threshold adapts to the
   noise measured on the border (JPEG artefacts, a slight vignette);
3. only candidates connected to the border are background, so a subject with background-coloured areas
   inside it (white laces, the whites of eyes) stays whole;
4. a 3x3 majority filter removes single-pixel specks and smooths the edge.

Step 3 is a flood fill. Pure-Python flood fills are far too slow and scipy is not a dependency, so it is
done with whole-array run propagation: within a row, a run of candidates reached anywhere is reached
everywhere; the same along columns; repeat until nothing changes. Each pass is a handful of vectorised
numpy operations, and ordinary photos converge in a few passes.
"""

from __future__ import annotations

import functools
import io
import mimetypes
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

BoolArray = npt.NDArray[np.bool_]
UInt8Array = npt.NDArray[np.uint8]

#: Formats segmentation accepts (HitPaw: .jpg, .jpeg, .png, .webp).
SUPPORTED_FORMATS: Final = frozenset({"jpeg", "png", "webp"})
_PIL_FORMAT: Final = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
#: Refuse decompression bombs long before Pillow's own (warning-only) limit.
MAX_PIXELS: Final = 40_000_000


class ImageError(ValueError):
    """The bytes are not an image the emulator can segment; the job ends in ERROR."""


def sniff_format(data: bytes) -> str | None:
    """The image format from the leading magic bytes, never from a name or a Content-Type header.

    Returns ``jpeg``, ``png``, ``webp``, ``gif`` or ``bmp`` (the last two are recognised so that the
    error says "unsupported" rather than "not an image"), or ``None``.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    return None


@dataclass(frozen=True)
class DecodedImage:
    """Pixels of an input image: ``rgb`` is (H, W, 3) uint8, ``alpha`` (H, W) uint8 or None if opaque."""

    format: str
    rgb: UInt8Array
    alpha: UInt8Array | None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), Pillow's order."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def decode_image(data: bytes) -> DecodedImage:
    """Decode jpeg/png/webp bytes recognised by their magic bytes; anything else raises ImageError."""
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("not an image (unrecognised leading bytes)")
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"unsupported image format: {fmt}")
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[fmt]]) as img:
            width, height = img.size
            if width < 1 or height < 1 or width * height > MAX_PIXELS:
                raise ImageError(f"image size {width}x{height} out of range")
            img.load()
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            converted = img.convert("RGBA" if has_alpha else "RGB")
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode {fmt} image: {exc}") from exc
    pixels = np.asarray(converted, dtype=np.uint8)
    if has_alpha:
        return DecodedImage(fmt, np.ascontiguousarray(pixels[..., :3]), np.ascontiguousarray(pixels[..., 3]))
    return DecodedImage(fmt, pixels, None)


def _border_pixels(rgb: UInt8Array) -> UInt8Array:
    if rgb.shape[0] <= 2 or rgb.shape[1] <= 2:
        return rgb.reshape(-1, 3)
    return np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])


def estimate_background(rgb: UInt8Array) -> tuple[npt.NDArray[np.float32], float]:
    """Background colour (median of the border) and a colour-distance threshold adapted to its noise."""
    border = _border_pixels(rgb).astype(np.float32)
    colour = np.median(border, axis=0).astype(np.float32)
    spread = float(np.median(np.sqrt(((border - colour) ** 2).sum(axis=1))))
    threshold = float(np.clip(24.0 + 3.0 * spread, 24.0, 72.0))
    return colour, threshold


def _run_ids(cand: BoolArray) -> npt.NDArray[np.intp]:
    """For each pixel of a C-contiguous mask, the index of the horizontal run of True it belongs to."""
    starts = cand.copy()
    starts[:, 1:] &= ~cand[:, :-1]
    return np.cumsum(starts.ravel(), dtype=np.intp) - 1


def _spread(cand_flat: BoolArray, run_id: npt.NDArray[np.intp], reached_flat: BoolArray) -> BoolArray:
    nruns = int(run_id[-1]) + 1 if run_id.size else 0
    run_hit = np.zeros(max(nruns, 1), dtype=np.bool_)
    run_hit[run_id[reached_flat]] = True
    return cand_flat & run_hit[np.maximum(run_id, 0)]


def connected_to_border(cand: BoolArray) -> BoolArray:
    """The part of ``cand`` 4-connected to the image border (a flood fill from every border candidate)."""
    height, width = cand.shape
    cand = np.ascontiguousarray(cand, dtype=np.bool_)
    seeds = np.zeros_like(cand)
    seeds[0, :] = seeds[-1, :] = True
    seeds[:, 0] = seeds[:, -1] = True
    reached = cand & seeds
    cand_t = np.ascontiguousarray(cand.T)
    row_ids, col_ids = _run_ids(cand), _run_ids(cand_t)
    cand_flat, cand_t_flat = cand.ravel(), cand_t.ravel()
    count = int(reached.sum())
    while True:
        reached = _spread(cand_flat, row_ids, reached.ravel()).reshape(height, width)
        reached_t = np.ascontiguousarray(reached.T)
        reached = _spread(cand_t_flat, col_ids, reached_t.ravel()).reshape(width, height).T
        new_count = int(reached.sum())
        if new_count == count:
            return np.ascontiguousarray(reached)
        count = new_count


def _majority3(mask: BoolArray) -> BoolArray:
    """3x3 majority vote (edges replicated): drops isolated pixels, smooths jagged outlines."""
    padded = np.pad(mask.astype(np.uint8), 1, mode="edge")
    height, width = mask.shape
    total = np.zeros((height, width), dtype=np.uint8)
    for dy in range(3):
        for dx in range(3):
            total += padded[dy : dy + height, dx : dx + width]
    result: BoolArray = total >= 5
    return result


def segment(rgb: UInt8Array, alpha: UInt8Array | None = None) -> BoolArray:
    """The subject mask (True = subject) of an (H, W, 3) uint8 image; see the module docstring.

    Pixels that are already transparent (alpha < 128) count as background candidates.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
    rgb = rgb[..., :3]
    colour, threshold = estimate_background(rgb)
    diff = rgb.astype(np.float32) - colour
    cand = np.einsum("ijk,ijk->ij", diff, diff) < threshold * threshold
    if alpha is not None:
        cand |= alpha < 128
    background = connected_to_border(cand)
    return _majority3(~background)


@dataclass(frozen=True)
class SegmentationResult:
    """The two files of a finished job and a few facts for logs and tests."""

    cutout_png: bytes
    mask_png: bytes
    width: int
    height: int
    subject_pixels: int
    source_format: str


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def render_results(image: DecodedImage, mask: BoolArray) -> SegmentationResult:
    """Encode the cut-out (RGBA, subject opaque, background fully transparent) and the "L" mask."""
    height, width = mask.shape
    alpha = np.where(mask, np.uint8(255), np.uint8(0))
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = np.where(mask[..., None], image.rgb, np.uint8(0))
    rgba[..., 3] = alpha
    return SegmentationResult(
        cutout_png=_png(Image.fromarray(rgba, mode="RGBA")),
        mask_png=_png(Image.fromarray(alpha, mode="L")),
        width=width,
        height=height,
        subject_pixels=int(mask.sum()),
        source_format=image.format,
    )


@functools.lru_cache(maxsize=32)
def segment_bytes(data: bytes) -> SegmentationResult:
    """The whole job: sniff, decode, segment, encode. CPU-bound: call it in a worker thread.

    Deterministic, so the same bytes give the same (immutable) result: a batch that submits the same
    sample a thousand times pays for one segmentation, which keeps large demos and benchmarks about the
    client, not the emulator.
    """
    image = decode_image(data)
    return render_results(image, segment(image.rgb, image.alpha))


# --------------------------------------------------------------------------------------------------
# Sample images


@dataclass(frozen=True)
class SampleImage:
    """A sample the emulator serves under ``/samples/{name}``.

    ``subject_pixels`` is the area of what was drawn as the subject, so tests can check a segmentation
    against it; ``expected_status`` is what a job on it should end in.
    """

    name: str
    content_type: str
    data: bytes
    width: int
    height: int
    subject_pixels: int
    expected_status: str
    description: str


_BACKGROUND: Final = (236, 238, 240)


def _shade(
    mask: BoolArray, canvas: UInt8Array, colour: tuple[int, int, int], light: tuple[float, float]
) -> None:
    """Paint ``colour`` where ``mask``, lit from ``light`` (relative x, y): brighter near it, darker away."""
    height, width = mask.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dist = np.hypot(xs / width - light[0], ys / height - light[1])
    factor = np.clip(1.15 - 0.45 * dist, 0.6, 1.15)[..., None]
    shaded = np.clip(np.asarray(colour, dtype=np.float32) * factor, 0, 255).astype(np.uint8)
    canvas[mask] = shaded[mask]


def _shape_mask(size: tuple[int, int], draw: str, *args: object, **kwargs: object) -> BoolArray:
    img = Image.new("L", size, 0)
    getattr(ImageDraw.Draw(img), draw)(*args, fill=255, **kwargs)
    result: BoolArray = np.asarray(img) > 0
    return result


def _canvas(size: tuple[int, int]) -> UInt8Array:
    width, height = size
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = _BACKGROUND
    return canvas


def _draw_shoe() -> tuple[UInt8Array, BoolArray]:
    size = (640, 480)
    canvas = _canvas(size)
    upper = _shape_mask(
        size, "polygon", [(120, 300), (150, 190), (250, 170), (330, 210), (430, 250), (520, 280), (540, 330)]
    )
    upper |= _shape_mask(size, "ellipse", [(440, 255), (545, 345)])
    sole = _shape_mask(size, "rounded_rectangle", [(105, 315), (555, 360)], radius=20)
    upper &= ~sole
    _shade(upper, canvas, (196, 38, 44), (0.3, 0.3))
    _shade(sole, canvas, (58, 58, 64), (0.3, 0.3))
    laces = np.zeros_like(upper)
    for i in range(4):
        x = 255 + 32 * i
        laces |= _shape_mask(size, "line", [(x, 215 + 8 * i), (x + 22, 238 + 8 * i)], width=6)
    canvas[laces & upper] = (250, 250, 250)  # background-coloured details *inside* the subject
    return canvas, upper | sole


def _draw_portrait() -> tuple[UInt8Array, BoolArray]:
    size = (480, 600)
    canvas = _canvas(size)
    shoulders = _shape_mask(size, "ellipse", [(60, 430), (420, 760)])  # cut off by the bottom edge
    neck = _shape_mask(size, "rectangle", [(205, 330), (275, 450)])
    head = _shape_mask(size, "ellipse", [(150, 130), (330, 360)])
    hair = _shape_mask(size, "ellipse", [(140, 105), (340, 260)]) & ~_shape_mask(
        size, "rectangle", [(0, 215), (480, 600)]
    )
    _shade(shoulders, canvas, (42, 82, 166), (0.4, 0.6))
    _shade(neck | head, canvas, (214, 160, 122), (0.4, 0.3))
    _shade(hair, canvas, (74, 48, 30), (0.4, 0.2))
    for cx in (205, 275):
        eye = _shape_mask(size, "ellipse", [(cx - 18, 235), (cx + 18, 257)])
        pupil = _shape_mask(size, "ellipse", [(cx - 7, 239), (cx + 7, 253)])
        canvas[eye] = (245, 245, 245)
        canvas[pupil] = (40, 30, 25)
    mouth = _shape_mask(size, "arc", [(210, 275), (270, 320)], start=20, end=160, width=5)
    canvas[mouth] = (150, 50, 60)
    return canvas, shoulders | neck | head | hair


def _draw_product() -> tuple[UInt8Array, BoolArray]:
    size = (512, 512)
    canvas = _canvas(size)
    top = _shape_mask(size, "polygon", [(256, 110), (400, 180), (256, 250), (112, 180)])
    left = _shape_mask(size, "polygon", [(112, 180), (256, 250), (256, 420), (112, 350)])
    right = _shape_mask(size, "polygon", [(256, 250), (400, 180), (400, 350), (256, 420)])
    _shade(top, canvas, (110, 190, 120), (0.5, 0.2))
    _shade(left, canvas, (50, 140, 80), (0.2, 0.5))
    _shade(right & ~left, canvas, (34, 96, 58), (0.8, 0.5))
    label = _shape_mask(size, "polygon", [(140, 250), (230, 293), (230, 340), (140, 297)])
    canvas[label] = (238, 236, 225)
    return canvas, top | left | right


def _draw_mug() -> tuple[UInt8Array, BoolArray]:
    size = (512, 512)
    canvas = _canvas(size)
    body = _shape_mask(size, "rounded_rectangle", [(140, 150), (330, 390)], radius=24)
    handle = _shape_mask(size, "ellipse", [(290, 200), (400, 330)]) & ~_shape_mask(
        size, "ellipse", [(315, 225), (375, 305)]
    )
    handle &= ~body
    _shade(body | handle, canvas, (28, 88, 168), (0.3, 0.3))
    stripe = _shape_mask(size, "rectangle", [(160, 250), (310, 270)])
    canvas[stripe] = (245, 245, 240)
    return canvas, body | handle


def _encode(canvas: UInt8Array, fmt: str) -> bytes:
    out = io.BytesIO()
    img = Image.fromarray(canvas, mode="RGB")
    if fmt == "JPEG":
        img.save(out, format="JPEG", quality=90)
    elif fmt == "WEBP":
        img.save(out, format="WEBP", quality=90, method=4)
    else:
        img.save(out, format=fmt)
    return out.getvalue()


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@functools.cache
def sample_images() -> dict[str, SampleImage]:
    """Every sample, generated deterministically on first use and then kept in memory."""
    samples: dict[str, SampleImage] = {}

    def add(
        name: str, data: bytes, drawn: tuple[UInt8Array, BoolArray] | None, expected: str, about: str
    ) -> None:
        width, height, area = 0, 0, 0
        if drawn is not None:
            height, width = drawn[1].shape
            area = int(drawn[1].sum())
        samples[name] = SampleImage(name, _content_type(name), data, width, height, area, expected, about)

    shoe, portrait, product, mug = _draw_shoe(), _draw_portrait(), _draw_product(), _draw_mug()
    add("shoe.jpg", _encode(shoe[0], "JPEG"), shoe, "COMPLETED", "red sneaker with white laces, JPEG")
    add("portrait.png", _encode(portrait[0], "PNG"), portrait, "COMPLETED", "head and shoulders, PNG")
    add("product.webp", _encode(product[0], "WEBP"), product, "COMPLETED", "shaded box with a label, WebP")
    add("mug.jpg", _encode(mug[0], "JPEG"), mug, "COMPLETED", "blue mug with a handle, JPEG")
    add(
        "disguised.png",
        _encode(mug[0], "JPEG"),
        mug,
        "COMPLETED",
        "JPEG bytes under a .png name: formats are recognised by content, not by name",
    )
    add("drawing.gif", _encode(product[0], "GIF"), None, "ERROR", "a GIF: an image, but not a supported one")
    add(
        "broken.jpg",
        b"This is not an image. The HitPaw emulator serves it to show a job ending in ERROR.\n",
        None,
        "ERROR",
        "not an image at all",
    )
    return samples
