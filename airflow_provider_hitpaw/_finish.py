"""Storefront finishes made on the worker from a kept cut-out: background, crop, canvas, format, size.

HitPaw gives one transparent cut-out and its mask; marketplaces want a white 2000x2000 JPEG, shops a small
WebP. Making those here, from the kept pair, costs no coin and needs no second request. Options are
checked when the DAG is parsed (:func:`parse_finishes` imports no Pillow); pixels are only touched by
:func:`apply_finish`, on the worker, with Pillow (the ``finish`` extra).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_hitpaw.exceptions import HitPawConfigurationError, HitPawError

if TYPE_CHECKING:
    from PIL import Image

#: Bumped whenever the same options would give different pixels, so kept finishes are made again.
RENDERING_VERSION: Final = 1
#: The most pixels an input may have (cut-out, mask or photo): 50 MP is beyond any product photo, and
#: decoding one as RGBA already takes 200 MB. Checked from the header, before a pixel is decoded.
MAX_INPUT_PIXELS: Final = 50_000_000
#: The most pixels a finish may have: a larger canvas is made smaller, keeping its aspect (a 12,000 px
#: square as RGBA would take 576 MB, and a batch makes several at once).
MAX_OUTPUT_PIXELS: Final = 25_000_000
#: The largest side a canvas or ``max_side`` may ask for, and the smallest.
MAX_SIDE: Final = 12_000
MIN_SIDE: Final = 16
#: The most an aspect canvas may stretch one way (a 10:1 banner, not a 1000:1 thread).
MAX_ASPECT: Final = 10.0
#: A mask pixel above this is subject: the midpoint keeps half-transparent hair inside the crop and leaves
#: faint halos and shadows out of it.
SUBJECT_THRESHOLD: Final = 127
#: What an original photo may be: what HitPaw takes.
_PHOTO_FORMATS: Final = ("JPEG", "PNG", "WEBP")
#: A finish's name when it is the only one and none was given.
DEFAULT_NAME: Final = "finish"

FORMATS: Final = ("png", "jpeg", "webp")
_EXTENSIONS: Final = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_FORMAT_ALIASES: Final = {"jpg": "jpeg"}
_DEFAULT_QUALITY: Final = {"jpeg": 90, "webp": 85}
TRANSPARENT: Final = "transparent"
BLUR: Final = "blur"
#: The colour names a background may use (CSS's values): the few a storefront uses, no more.
COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "white": (255, 255, 255),
    "whitesmoke": (245, 245, 245),
    "ivory": (255, 255, 240),
    "beige": (245, 245, 220),
    "gainsboro": (220, 220, 220),
    "lightgray": (211, 211, 211),
    "lightgrey": (211, 211, 211),
    "silver": (192, 192, 192),
    "darkgray": (169, 169, 169),
    "darkgrey": (169, 169, 169),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "black": (0, 0, 0),
}
_HEX_COLOUR: Final = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})")
_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,40}")
_MASK_SUFFIX: Final = "_mask"
_SIZE: Final = re.compile(r"\s*(\d{1,6})\s*[x\u00d7]\s*(\d{1,6})\s*", re.IGNORECASE)
_ASPECT: Final = re.compile(r"\s*(\d{1,4}(?:\.\d{1,3})?)\s*:\s*(\d{1,4}(?:\.\d{1,3})?)\s*")
_MARGIN: Final = re.compile(r"\s*(\d{1,5}(?:\.\d{1,3})?)\s*(px|%)\s*", re.IGNORECASE)
#: Long side of the photo where a blurred backdrop is blurred: a blur keeps no detail worth more pixels.
_BLUR_WORK_SIDE: Final = 256
#: Blur radius as a share of that work image's long side.
_BLUR_RADIUS_SHARE: Final = 0.03
#: EXIF orientations and the transpose that shows the photo upright (EXIF 2.3, tag 0x0112).
_ORIENTATION_TAG: Final = 0x0112


class UnusableImageError(HitPawError, ValueError):
    """An image a finish or a measure cannot be made from: not a readable image, or too large to decode.

    Not retryable: the same bytes are refused again.
    """


@dataclass(frozen=True)
class Finish:
    """One named output made from a cut-out (a white 2000x2000 JPEG, a 400 px WebP); checked when built.

    ``margin`` is pixels (``12`` or ``"12px"``) or a share of the subject box's larger side (``"5%"``);
    ``canvas`` a size (``"2000x2000"``) or an aspect (``"1:1"``) the subject fills ``fill`` of.
    """

    name: str
    background: str = TRANSPARENT
    crop: bool = False
    margin: str | int = 0
    canvas: str | None = None
    fill: float = 1.0
    format: str = "png"
    quality: int | None = None
    lossless: bool = False
    max_side: int | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        # Spellings that mean the same output are stored one way, so equal finishes compare (and hash) equal.
        object.__setattr__(self, "background", self.background.strip().lower())
        fmt = self.format.strip().lower()
        object.__setattr__(self, "format", _FORMAT_ALIASES.get(fmt, fmt))
        object.__setattr__(self, "fill", float(self.fill))
        _check_values(self)

    @property
    def extension(self) -> str:
        """The file name's extension for this finish's format: ``png``, ``jpg`` or ``webp``."""
        return _EXTENSIONS[self.format]

    @property
    def effective_quality(self) -> int | None:
        """The encoder's quality: the one given, else the format's default; None where it does not apply."""
        if self.format == "png" or self.lossless:
            return None
        return self.quality if self.quality is not None else _DEFAULT_QUALITY[self.format]

    def as_dict(self) -> dict[str, Any]:
        """The options as :func:`parse_finishes` takes them back: JSON-safe, for XCom or a serialized DAG."""
        return {option: getattr(self, option) for option in _OPTIONS}

    def digest(self) -> str:
        """A stable hash of what the pixels are made of (not the name): unchanged options, same digest.

        Spellings of one output (``"white"``/``"#fff"``, ``quality=None``/``90`` for JPEG) hash alike;
        :data:`RENDERING_VERSION` is part of it, so a change of how finishes are drawn makes them again.
        """
        margin = _margin(self)
        canvas = _canvas(self)
        options = {
            "version": RENDERING_VERSION,
            "background": _background_key(self.background),
            "crop": self.crop,
            "margin": [margin[0], margin[1]] if self.crop else None,
            "canvas": list(canvas) if canvas else None,
            "fill": self.fill if canvas else None,
            "format": self.format,
            "quality": self.effective_quality,
            "lossless": self.lossless,
            "max_side": self.max_side,
        }
        text = json.dumps(options, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


_OPTIONS: Final = tuple(f.name for f in fields(Finish))


def _refuse(name: object, problem: str) -> HitPawConfigurationError:
    return HitPawConfigurationError("finish", f"finish {name!r}: {problem}")


def _check_types(finish: Finish) -> None:
    """Refuse a value of the wrong type, naming the option (``True`` is no number, ``1`` no flag)."""

    def refuse(option: str, expected: str) -> HitPawConfigurationError:
        value = getattr(finish, option)
        return _refuse(finish.name, f"{option} must be {expected}, not {type(value).__name__} {value!r}")

    if not isinstance(finish.name, str):
        raise _refuse(finish.name, f"name must be a string, not {type(finish.name).__name__}")
    for option in ("background", "format"):
        if not isinstance(getattr(finish, option), str):
            raise refuse(option, "a string")
    for option in ("crop", "lossless"):
        if not isinstance(getattr(finish, option), bool):
            raise refuse(option, "true or false")
    if isinstance(finish.margin, bool) or not isinstance(finish.margin, int | str):
        raise refuse("margin", 'pixels (12 or "12px") or a percentage ("5%")')
    if finish.canvas is not None and not isinstance(finish.canvas, str):
        raise refuse("canvas", 'a size ("2000x2000") or an aspect ("1:1")')
    if isinstance(finish.fill, bool) or not isinstance(finish.fill, int | float):
        raise refuse("fill", "a number")
    for option in ("quality", "max_side"):
        value = getattr(finish, option)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise refuse(option, "a whole number")


def _check_values(finish: Finish) -> None:
    """Refuse options that cannot make an image, or would make one other than the user meant."""
    name = finish.name
    if not _NAME.fullmatch(name):
        raise _refuse(name, "name must be 1 to 40 letters, digits, '-' or '_' (it is part of a file name)")
    if name.casefold().endswith(_MASK_SUFFIX):
        raise _refuse(name, f"name must not end in {_MASK_SUFFIX!r}: its file would pass for a mask")
    if finish.format not in FORMATS:
        raise _refuse(name, f"format must be one of {', '.join(FORMATS)}, not {finish.format!r}")
    _background_key(finish.background, name)
    if finish.background == TRANSPARENT and finish.format == "jpeg":
        raise _refuse(name, "format jpeg has no transparency: give a background colour, 'blur', or png/webp")
    if not 0.0 < finish.fill <= 1.0:
        raise _refuse(name, f"fill must be above 0 and at most 1 (the subject's share), not {finish.fill}")
    canvas = _canvas(finish)
    if finish.fill != 1.0 and canvas is None:
        raise _refuse(name, "fill needs a canvas: it is the subject's share of the canvas")
    margin, _unit = _margin(finish)
    if margin and not finish.crop:
        raise _refuse(name, "margin needs crop=True: it is added around the subject's box")
    if finish.quality is not None:
        if finish.format == "png":
            raise _refuse(name, "quality does not apply to png, which is lossless")
        if finish.lossless:
            raise _refuse(name, "quality does not apply to lossless webp")
        if not 1 <= finish.quality <= 100:
            raise _refuse(name, f"quality must be 1 to 100, not {finish.quality}")
    if finish.lossless and finish.format != "webp":
        raise _refuse(name, f"lossless applies to webp only, not {finish.format}")
    if finish.max_side is not None and not MIN_SIDE <= finish.max_side <= MAX_SIDE:
        raise _refuse(name, f"max_side must be {MIN_SIDE} to {MAX_SIDE} pixels, not {finish.max_side}")


def _background_key(background: str, name: str | None = None) -> str:
    """``transparent``, ``blur`` or the colour as ``#rrggbb``; refused (for finish ``name``) otherwise."""
    if background in (TRANSPARENT, BLUR):
        return background
    rgb = _colour(background)
    if rgb is None:
        raise _refuse(
            name,
            f"background must be 'transparent', 'blur', a colour name ({', '.join(sorted(COLOURS))}) "
            f"or '#rgb'/'#rrggbb', not {background!r}",
        )
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _colour(background: str) -> tuple[int, int, int] | None:
    if background in COLOURS:
        return COLOURS[background]
    if not _HEX_COLOUR.fullmatch(background):
        return None
    digits = background[1:]
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _margin(finish: Finish) -> tuple[float, str]:
    """The margin as (amount, ``px`` or ``%``)."""
    if isinstance(finish.margin, int):
        amount, unit = float(finish.margin), "px"
    else:
        match = _MARGIN.fullmatch(finish.margin)
        if match is None:
            raise _refuse(
                finish.name, f'margin must be pixels ("12px") or a percentage ("5%"), not {finish.margin!r}'
            )
        amount, unit = float(match.group(1)), match.group(2).lower()
        if unit == "px" and not amount.is_integer():
            raise _refuse(finish.name, f"margin must be whole pixels, not {finish.margin!r}")
    if amount < 0 or (unit == "px" and amount > MAX_SIDE) or (unit == "%" and amount > 100):
        raise _refuse(finish.name, f"margin must be 0 to {MAX_SIDE} px or 0 to 100%, not {finish.margin!r}")
    return amount, unit


def _canvas(finish: Finish) -> tuple[float, float, str] | None:
    """The canvas as (width, height, ``px``) or (width, height, ``aspect``); None without one."""
    if finish.canvas is None:
        return None
    size = _SIZE.fullmatch(finish.canvas)
    if size is not None:
        width, height = int(size.group(1)), int(size.group(2))
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise _refuse(
                finish.name, f"canvas sides must be {MIN_SIDE} to {MAX_SIDE} pixels, not {finish.canvas!r}"
            )
        return float(width), float(height), "px"
    aspect = _ASPECT.fullmatch(finish.canvas)
    if aspect is None:
        raise _refuse(
            finish.name, f'canvas must be a size ("2000x2000") or an aspect ("1:1"), not {finish.canvas!r}'
        )
    width_part, height_part = float(aspect.group(1)), float(aspect.group(2))
    if (
        width_part <= 0
        or height_part <= 0
        or max(width_part / height_part, height_part / width_part) > MAX_ASPECT
    ):
        raise _refuse(
            finish.name, f"canvas aspect must be positive and at most {MAX_ASPECT:g}:1, not {finish.canvas!r}"
        )
    return width_part, height_part, "aspect"


def parse_finishes(value: Any) -> tuple[Finish, ...]:
    """The finishes an operator argument asks for, checked; pure, so a DAG file's mistakes show at parse.

    Accepts None, one dict (or :class:`Finish`), a list of them, or a dict of name to dict. A finish
    without a name is called ``finish``, which only one may be. ``{}`` and ``[]`` ask for none.
    """
    if value is None:
        return ()
    if isinstance(value, Finish):
        items: list[tuple[str | None, Any]] = [(None, value)]
    elif isinstance(value, Mapping):
        if value and all(isinstance(v, Mapping | Finish) for v in value.values()):
            items = list(value.items())
        elif value:
            items = [(None, value)]
        else:
            items = []
    elif isinstance(value, list | tuple):
        items = [(None, item) for item in value]
    else:
        raise HitPawConfigurationError(
            "finish",
            f"finishes must be a dict, a list of dicts or a dict of name to dict, not {type(value).__name__}",
        )
    finishes = tuple(_one_finish(key, item, len(items)) for key, item in items)
    seen: dict[str, Finish] = {}
    for finish in finishes:
        other = seen.setdefault(finish.name.casefold(), finish)
        if other is not finish:
            raise _refuse(
                finish.name, f"name is used twice (as {other.name!r} too): each finish needs its own file"
            )
    return finishes


def _one_finish(key: Any, item: Any, count: int) -> Finish:
    if key is not None and not isinstance(key, str):
        raise HitPawConfigurationError("finish", f"a finish's name must be a string, not {key!r}")
    if isinstance(item, Finish):
        if key is not None and key != item.name:
            raise _refuse(key, f"is given as a finish named {item.name!r}")
        return item
    if not isinstance(item, Mapping):
        raise _refuse(key, f"must be a dict of options, not {type(item).__name__}")
    options = dict(item)
    unknown = sorted(str(option) for option in options if option not in _OPTIONS)
    name = options.get("name", key)
    if unknown:
        raise _refuse(
            name or DEFAULT_NAME,
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(known: {', '.join(_OPTIONS)})",
        )
    if key is not None and "name" in options and options["name"] != key:
        raise _refuse(key, f"name is given twice, as {key!r} and as {options['name']!r}")
    if name is None:
        if count > 1:
            raise _refuse(DEFAULT_NAME, "every finish needs a name when there are several")
        name = DEFAULT_NAME
    options["name"] = name
    return Finish(**options)


def finish_name(cutout_name: str, finish: Finish) -> str:
    """The finish's file name beside its cut-out: ``main.png`` makes ``main.storefront.jpg``.

    Never a mask's name (finish names do not end in ``_mask``). In a mirrored layout an input
    ``main.storefront.jpg`` has the cut-out ``main.storefront.png``, the name of ``main.png``'s png
    finish ``storefront``: check cut-out and finish names for clashes together.
    """
    if not cutout_name.endswith(".png") or cutout_name.endswith(f"{_MASK_SUFFIX}.png"):
        raise ValueError(f"{cutout_name!r} is not a cut-out's name (one ending in .png, not _mask.png)")
    return f"{cutout_name.removesuffix('.png')}.{finish.name}.{finish.extension}"


# --- pixels (Pillow, imported inside each function) ---------------------------------------------------


def open_image(data: bytes, *, what: str, formats: tuple[str, ...]) -> Image.Image:
    """The image, opened lazily: refused from its header if over :data:`MAX_INPUT_PIXELS`, so a
    decompression bomb costs no memory. Pillow's own limit is left as the user set it."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=list(formats))
    except Image.DecompressionBombError:
        raise UnusableImageError(
            f"the {what} is over {MAX_INPUT_PIXELS // 1_000_000} megapixels: refused before decoding"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnusableImageError(f"the {what} is not a readable {'/'.join(formats)} image ({err})") from None
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        image.close()
        raise UnusableImageError(
            f"the {what} is {width}x{height}, over {MAX_INPUT_PIXELS // 1_000_000} megapixels: "
            "refused before decoding"
        )
    return image


def load_as(image: Image.Image, mode: str, what: str) -> Image.Image:
    """The decoded image in ``mode``; a file cut short or corrupt is an :class:`UnusableImageError`."""
    try:
        image.load()
        return image if image.mode == mode else image.convert(mode)
    except (OSError, SyntaxError, ValueError) as err:
        raise UnusableImageError(f"the {what} could not be decoded ({err})") from None


def subject_box(mask: Image.Image) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom; right and bottom exclusive) of the mask's pixels over
    :data:`SUBJECT_THRESHOLD`, or None when no pixel is."""
    binary = mask.point([0] * (SUBJECT_THRESHOLD + 1) + [255] * (255 - SUBJECT_THRESHOLD))
    return binary.getbbox()


def crop_box(finish: Finish, mask: Image.Image | None, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """What the finish keeps of the frame: the subject's box plus the margin, clamped to the frame; the
    whole frame without ``crop``, or when the mask holds no subject (nothing to crop to: keep all)."""
    width, height = size
    box = subject_box(mask) if finish.crop and mask is not None else None
    if box is None:
        return 0, 0, width, height
    amount, unit = _margin(finish)
    if unit == "%":
        amount = max(box[2] - box[0], box[3] - box[1]) * amount / 100
    pad = math.floor(amount + 0.5)
    return max(0, box[0] - pad), max(0, box[1] - pad), min(width, box[2] + pad), min(height, box[3] + pad)


def _layout(
    finish: Finish, piece: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """The output's size, the piece's size in it and where it goes: canvas, fill and ``max_side`` folded
    into one scale, so the piece is resampled once (a downsize after the canvas would resample twice)."""
    piece_w, piece_h = piece
    canvas = _canvas(finish)
    if canvas is None:
        out_w, out_h, scale = float(piece_w), float(piece_h), 1.0
    elif canvas[2] == "px":
        out_w, out_h = canvas[0], canvas[1]
        scale = min(finish.fill * out_w / piece_w, finish.fill * out_h / piece_h)
    else:
        ratio = canvas[0] / canvas[1]
        # The smallest canvas of this aspect where the piece, unscaled, fills ``fill`` of the limiting side.
        out_w = max(piece_w / finish.fill, piece_h * ratio / finish.fill)
        out_h = out_w / ratio
        scale = 1.0
        shrink = min(1.0, MAX_SIDE / max(out_w, out_h))
        out_w, out_h, scale = out_w * shrink, out_h * shrink, scale * shrink
    if finish.max_side is not None:
        shrink = min(1.0, finish.max_side / max(out_w, out_h))
        out_w, out_h, scale = out_w * shrink, out_h * shrink, scale * shrink
    if out_w * out_h > MAX_OUTPUT_PIXELS:  # an image made is bounded as one read: memory, not only time
        shrink = (MAX_OUTPUT_PIXELS / (out_w * out_h)) ** 0.5
        out_w, out_h, scale = out_w * shrink, out_h * shrink, scale * shrink
    size_w, size_h = max(1, round(out_w)), max(1, round(out_h))
    if canvas is None:
        return (size_w, size_h), (size_w, size_h), (0, 0)
    new_w, new_h = min(size_w, max(1, round(piece_w * scale))), min(size_h, max(1, round(piece_h * scale)))
    return (size_w, size_h), (new_w, new_h), ((size_w - new_w) // 2, (size_h - new_h) // 2)


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """LANCZOS to ``size``; a large reduction first by whole factors (indistinguishable, several times
    faster). Pillow resamples RGBA premultiplied, so transparent pixels leave no dark fringe."""
    from PIL import Image

    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _backdrop(
    photo: Image.Image,
    frame: tuple[int, int],
    region: tuple[int, int, int, int] | None,
    size: tuple[int, int],
) -> Image.Image:
    """The photo, blurred, at ``size``: its ``region`` of the cut-out's ``frame`` (aligned behind the
    subject), or with no region the whole photo cropped to the output's aspect (a canvas's backdrop).

    Blurred small and enlarged: a blur keeps no detail, and a JPEG is decoded at 1/2 to 1/8 scale.
    A photo whose EXIF orientation matches the cut-out's shape is turned upright first.
    """
    from PIL import Image, ImageFilter

    orientation = photo.getexif().get(_ORIENTATION_TAG, 1)
    turned = orientation in (5, 6, 7, 8)
    raw_w, raw_h = photo.size
    upright = (raw_h, raw_w) if turned else (raw_w, raw_h)
    # HitPaw's frame is the upright photo's, or the raw one's; take whichever shape matches it.
    if turned and abs(upright[0] / upright[1] - frame[0] / frame[1]) > abs(
        raw_w / raw_h - frame[0] / frame[1]
    ):
        orientation, upright = 1, (raw_w, raw_h)
    to_photo = upright[0] / frame[0], upright[1] / frame[1]
    if region is None:
        target = size[0] / size[1]
        width, height = upright
        if width / height > target:
            cut_w, cut_h = height * target, float(height)
        else:
            cut_w, cut_h = float(width), width / target
        area = ((width - cut_w) / 2, (height - cut_h) / 2, (width + cut_w) / 2, (height + cut_h) / 2)
    else:
        area = (
            region[0] * to_photo[0],
            region[1] * to_photo[1],
            region[2] * to_photo[0],
            region[3] * to_photo[1],
        )
    area_long = max(area[2] - area[0], area[3] - area[1], 1.0)
    work_long = max(1, min(_BLUR_WORK_SIDE, max(size)))
    reduce = max(1 / 8, min(1.0, 2 * work_long / area_long))
    photo.draft("RGB", (max(1, math.ceil(raw_w * reduce)), max(1, math.ceil(raw_h * reduce))))
    picture = load_as(photo, "RGB", "original photo")
    transpose = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    if transpose is not None:
        picture = picture.transpose(transpose)
    decoded = picture.size[0] / upright[0]
    box = (area[0] * decoded, area[1] * decoded, area[2] * decoded, area[3] * decoded)
    work_scale = work_long / max(size)
    work = (max(1, round(size[0] * work_scale)), max(1, round(size[1] * work_scale)))
    small = picture.resize(work, Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    small = small.filter(ImageFilter.GaussianBlur(max(1.0, _BLUR_RADIUS_SHARE * max(work))))
    return small.resize(size, Image.Resampling.BICUBIC)


def apply_finish(finish: Finish, cutout: bytes, mask: bytes, original: bytes | None = None) -> bytes:
    """The finish made from a kept cut-out (RGBA PNG) and its mask, encoded; the same bytes every time.

    The crop box is the mask's pixels over :data:`SUBJECT_THRESHOLD` plus the margin; an empty mask
    keeps the whole frame. ``blur`` needs ``original`` (the photo sent to HitPaw); without it a
    :class:`HitPawConfigurationError` says so. Inputs over :data:`MAX_INPUT_PIXELS` are refused unread.
    """
    return apply_finishes((finish,), cutout, mask, original)[finish.name]


def apply_finishes(
    finishes: tuple[Finish, ...] | list[Finish], cutout: bytes, mask: bytes, original: bytes | None = None
) -> dict[str, bytes]:
    """Every finish of one image, by name, from one decode of the pair: decoding a 12 MP cut-out costs
    more than most finishes made from it. Each finish's bytes are those :func:`apply_finish` gives."""
    from PIL import Image

    if len({finish.name.casefold() for finish in finishes}) != len(finishes):
        raise HitPawConfigurationError("finish", "two finishes share a name: each needs its own file")
    for finish in finishes:
        if finish.background == BLUR and original is None:
            raise _refuse(finish.name, "background 'blur' needs the original photo, and none was given")
    # Every header is read before any pixel is decoded: a refused input costs no memory.
    cut_image = open_image(cutout, what="cut-out", formats=("PNG",))
    mask_image = open_image(mask, what="mask", formats=("PNG",))
    blurred = any(finish.background == BLUR for finish in finishes)
    if blurred and original is not None:
        open_image(original, what="original photo", formats=_PHOTO_FORMATS)
    icc_profile = cut_image.info.get("icc_profile")
    cut = load_as(cut_image, "RGBA", "cut-out")
    matte = None
    if any(finish.crop for finish in finishes):  # only a crop reads the mask's pixels
        matte = load_as(mask_image, "L", "mask")
        if matte.size != cut.size:  # HitPaw's pair is one size; a stray one is fitted, not refused
            matte = matte.resize(cut.size, Image.Resampling.BILINEAR)
    return {finish.name: _render(finish, cut, matte, original, icc_profile) for finish in finishes}


def _render(
    finish: Finish, cut: Image.Image, matte: Image.Image | None, original: bytes | None, icc_profile: Any
) -> bytes:
    """One finish from the decoded pair (neither is changed, so finishes can share them)."""
    from PIL import Image

    box = crop_box(finish, matte, cut.size)
    piece = cut if box == (0, 0, *cut.size) else cut.crop(box)
    size, piece_size, position = _layout(finish, piece.size)
    piece = _resized(piece, piece_size)

    if finish.background == TRANSPARENT:
        if piece.size == size:
            output = piece
        else:
            output = Image.new("RGBA", size, (0, 0, 0, 0))
            output.paste(piece, position)
    else:
        if finish.background == BLUR:
            assert original is not None
            # Opened afresh for each finish: decoding at a reduced scale (draft) happens once per opening.
            photo = open_image(original, what="original photo", formats=_PHOTO_FORMATS)
            region = None if finish.canvas is not None else box
            output = _backdrop(photo, cut.size, region, size)
        else:
            colour = _colour(finish.background)
            assert colour is not None
            output = Image.new("RGB", size, colour)
        output.paste(piece, position, piece)
    return _encoded(finish, output, icc_profile if isinstance(icc_profile, bytes) else None)


def _encoded(finish: Finish, image: Image.Image, icc_profile: bytes | None) -> bytes:
    """The image in the finish's format; no metadata but the cut-out's colour profile, so bytes repeat."""
    out = io.BytesIO()
    extra: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    if finish.format == "png":
        image.save(out, "PNG", optimize=False, **extra)
    elif finish.format == "jpeg":
        image.save(out, "JPEG", quality=finish.effective_quality, optimize=True, **extra)
    elif finish.lossless:
        image.save(out, "WEBP", lossless=True, **extra)
    else:
        image.save(out, "WEBP", quality=finish.effective_quality, **extra)
    return out.getvalue()
