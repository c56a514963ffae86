"""What results are called: flat hashed names (a contract with every folder kept so far) and a catalogue's
own folders mirrored below a root."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_hitpaw._names import ResultLayout, common_root, flat_names, mirrored_names
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError

ROOT = "file:///data/raw/"


class TestFlatNames:
    def test_names_are_the_stem_and_the_hash_of_the_whole_identity(self) -> None:
        identity = "https://cdn.example.test/raw/sku-001/main.jpg?v=2"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        assert flat_names(identity) == (f"main-{digest}.png", f"main-{digest}_mask.png")

    def test_two_catalogue_folders_get_names_of_their_own(self) -> None:
        first = flat_names("file:///data/raw/sku-001/main.jpg")
        second = flat_names("file:///data/raw/sku-002/main.jpg")
        assert first != second
        assert first[0].startswith("main-")

    def test_a_name_without_letters_or_digits_becomes_image(self) -> None:
        assert flat_names("https://cdn.example.test/%20%20.jpg")[0].startswith("image-")


class TestMirroredNames:
    def test_a_catalogue_keeps_its_folders(self) -> None:
        names = mirrored_names("file:///data/raw/sku-001/main.jpg", ROOT)
        assert names == ("sku-001/main.png", "sku-001/main_mask.png")

    def test_names_in_any_script_survive_a_url(self) -> None:
        url = "https://cdn.example.test/raw/%E5%95%86%E5%93%81/%D1%84%D0%BE%D1%82%D0%BE.jpg"
        assert mirrored_names(url, "https://CDN.example.test/raw")[0] == "商品/фото.png"

    def test_a_query_is_no_part_of_the_name(self) -> None:
        assert mirrored_names("https://h.test/raw/a/main.jpg?X-Amz-Signature=s", "https://h.test/raw/")[
            0
        ] == ("a/main.png")

    @pytest.mark.parametrize(
        "identity",
        [
            "file:///data/other/main.jpg",
            "file:///data/rawish/main.jpg",
            "file:///data/raw/../secret/main.jpg",
            "s3://data/raw/main.jpg",
        ],
    )
    def test_an_input_outside_the_root_is_refused(self, identity: str) -> None:
        with pytest.raises(HitPawConfigurationError, match="input_root"):
            mirrored_names(identity, ROOT)

    def test_the_root_itself_is_no_input(self) -> None:
        with pytest.raises(HitPawConfigurationError, match="no file below it"):
            mirrored_names("file:///data/raw/", ROOT)

    def test_hidden_and_odd_folders_are_made_plain(self) -> None:
        names = mirrored_names("https://h.test/raw/.git/a%20b/%2E%2E/main.jpg", "https://h.test/raw/")
        # ``%2E%2E`` decodes to ``..`` and is resolved before the root is judged: it stays below it.
        assert names[0] == "git/main.png"

    def test_a_stem_that_looks_like_a_mask_keeps_a_hash(self) -> None:
        cutout, mask = mirrored_names("file:///data/raw/a/main_mask.jpg", ROOT)
        assert cutout != "a/main_mask.png"
        assert cutout.startswith("a/main_mask-")
        assert mask == cutout.removesuffix(".png") + "_mask.png"


class TestUniqueNames:
    def test_two_formats_of_one_picture_are_refused_before_paying(self) -> None:
        layout = ResultLayout.mirror(ROOT)
        with pytest.raises(HitPawConfigurationError, match=r"would both be kept as a/main\.png"):
            layout.check_unique(["file:///data/raw/a/main.jpg", "file:///data/raw/a/main.png"])

    def test_names_that_differ_only_in_case_are_refused(self) -> None:
        layout = ResultLayout.mirror(ROOT)
        with pytest.raises(HitPawConfigurationError, match="would both be kept"):
            layout.check_unique(["file:///data/raw/A/main.jpg", "file:///data/raw/a/main.jpg"])

    def test_a_cut_out_named_like_another_inputs_folder_is_refused_before_paying(self) -> None:
        """``raw/a.jpg`` is kept as ``a.png``, and ``raw/a.png/b.jpg`` below a folder ``a.png/``: both were
        paid for, and one could not be written (a file where a folder must be)."""
        layout = ResultLayout.mirror(ROOT)
        with pytest.raises(HitPawConfigurationError, match="a file, and a folder of results"):
            layout.check_unique(["file:///data/raw/a.jpg", "file:///data/raw/a.png/b.jpg"])

    def test_a_name_too_long_for_an_object_store_is_refused_before_paying(self) -> None:
        deep = "/".join(["x" * 100] * 8)
        with pytest.raises(HitPawConfigurationError, match="too deep or long"):
            mirrored_names(f"https://h.test/raw/{deep}/main.jpg", "https://h.test/raw/")

    def test_a_catalogue_is_accepted(self) -> None:
        layout = ResultLayout.mirror(ROOT)
        layout.check_unique([f"file:///data/raw/sku-{n:03d}/main.jpg" for n in range(50)])


class TestCommonRoot:
    def test_the_deepest_folder_holding_every_input(self) -> None:
        inputs = ["s3://shop/raw/sku-001/main.jpg", "s3://shop/raw/sku-002/side/main.jpg"]
        assert common_root(inputs) == "s3://shop/raw/"

    @pytest.mark.parametrize(
        "inputs",
        [
            ["file:///data/raw/sku-001/main.jpg"],
            ["file:///data/raw/sku-001/main.jpg", "file:///data/raw/sku-001/b.jpg"],
        ],
    )
    def test_inputs_in_one_folder_must_name_their_root(self, inputs: list[str]) -> None:
        """One SKU's batch (or a mapped chunk of one) was kept flat as main.png, over another task's."""
        with pytest.raises(HitPawConfigurationError, match="all in one folder"):
            common_root(inputs)

    def test_a_url_root_is_a_url_again(self) -> None:
        root = common_root(["https://h.test/a%20b/x/1.jpg", "https://h.test/a%20b/y/2.jpg"])
        assert root == "https://h.test/a%20b/"
        assert mirrored_names("https://h.test/a%20b/x/1.jpg", root)[0] == "x/1.png"

    def test_inputs_in_two_buckets_have_none(self) -> None:
        with pytest.raises(HitPawConfigurationError, match="different places"):
            common_root(["s3://a/raw/1.jpg", "s3://b/raw/1.jpg"])


_segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\\\x00"), min_size=1, max_size=12
)


@given(paths=st.lists(st.lists(_segment, min_size=1, max_size=4), min_size=1, max_size=6))
def test_mirrored_names_stay_below_the_output_and_never_look_like_another_inputs(
    paths: list[list[str]],
) -> None:
    """Whatever the catalogue's names: no name leaves the output folder or hides in it, a cut-out is never
    named as a mask, and two inputs either get names of their own or are refused before paying."""
    from urllib.parse import quote

    identities = [f"https://h.test/raw/{'/'.join(quote(part, safe='') for part in parts)}" for parts in paths]
    layout = ResultLayout.mirror("https://h.test/raw/")
    kept: dict[str, str] = {}
    for identity in identities:
        try:
            cutout, mask = layout.names(identity)
        except HitPawConfigurationError:
            continue  # a path that resolves to the root or above it: refused before paying
        for name in (cutout, mask):
            parts = name.split("/")
            assert all(part and not part.startswith(".") for part in parts), name
        assert not cutout.endswith("_mask.png")
        assert mask == cutout.removesuffix(".png") + "_mask.png"
        kept[identity] = cutout
    files = [name.casefold() for identity in kept for name in layout.names(identity)]
    folders = {"/".join(f.split("/")[:depth]) for f in files for depth in range(1, f.count("/") + 1)}
    clash = len(set(files)) < len(files) or bool(folders & set(files))
    try:
        layout.check_unique(list(kept))
    except HitPawConfigurationError:
        assert clash
    else:
        assert not clash
