"""Your own images as first-class data: colour kept, every Pillow mode by its real range, sizes
fitted by stretch/pad/crop, file names kept (Dataset.paths), non-image files counted."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kmeans_mnist.data.datasets import DatasetError, load_dataset
from kmeans_mnist.data.images import read_image, to_grey


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))


def files(path, **options):
    return load_dataset("files", data_dir=path, keep_blank=True, **options)


def colour_tiles(count: int, seed: int = 0, side: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, side, side, 3), dtype=np.uint8)


# --- colour ----------------------------------------------------------------------------------


def test_colour_class_folders_stay_colour_and_grey_ones_join_them(tmp_path):
    tiles = colour_tiles(6)
    for index, tile in enumerate(tiles):
        folder = tmp_path / "pics" / ("red" if index % 2 else "blue")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tile).save(folder / f"{index}.png")
    grey = np.full((8, 8), 77, np.uint8)
    Image.fromarray(grey).save(tmp_path / "pics" / "red" / "z-grey.png")
    data = files(tmp_path / "pics")
    assert data.channels == 3 and data.images.shape == (7, 8, 8, 3) and data.image_shape == (8, 8)
    assert data.all_pixel.shape == (7, 8 * 8 * 3) and data.all_pixel.flags.c_contiguous
    assert list(data.paths) == [
        "blue/0.png",
        "blue/2.png",
        "blue/4.png",
        "red/1.png",
        "red/3.png",
        "red/5.png",
        "red/z-grey.png",
    ]
    np.testing.assert_array_equal(data.images[0], tiles[0])
    np.testing.assert_array_equal(data.images[6], np.repeat(grey[..., None], 3, axis=2))
    assert "colour" in repr(data)
    grey_data = files(tmp_path / "pics", grey=True)
    assert grey_data.channels == 1 and grey_data.converted_to_grey and grey_data.name.endswith("-grey")
    np.testing.assert_array_equal(grey_data.images[0], np.array(Image.fromarray(tiles[0]).convert("L")))


def test_rgb_files_that_are_grey_stay_grey(tmp_path):
    for index in range(3):
        grey = np.full((5, 5), 40 * index + 10, np.uint8)
        Image.fromarray(grey).convert("RGB").save(tmp_path / f"{index}.png")
    data = files(tmp_path)
    assert data.channels == 1 and not data.converted_to_grey
    assert data.images[2, 0, 0] == 90


def test_colour_npy_and_npz(tmp_path):
    tiles = colour_tiles(5)
    np.save(tmp_path / "c.npy", tiles)
    data = files(tmp_path / "c.npy")
    assert data.channels == 3 and data.paths is None
    np.testing.assert_array_equal(data.images, tiles)
    grey = files(tmp_path / "c.npy", grey=True)
    expected = np.stack([np.array(Image.fromarray(tile).convert("L")) for tile in tiles])
    np.testing.assert_array_equal(grey.images, expected)
    np.testing.assert_array_equal(to_grey(tiles), expected)
    same = np.repeat(tiles[..., :1], 3, axis=3)  # three equal channels: grey data stays grey
    np.savez(tmp_path / "g.npz", images=same, labels=np.arange(5))
    assert files(tmp_path / "g.npz").channels == 1


# --- modes -----------------------------------------------------------------------------------


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")
    pixels = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(pixels, np.rint(values / 257).astype(np.uint8))
    assert pixels.max() < 255 and len(np.unique(pixels)) > 30


@pytest.mark.parametrize("top", [1.0, 200.0, 5000.0], ids=["unit", "bytes", "other"])
def test_float_images_by_their_range(tmp_path, top):
    values = np.linspace(0, top, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    pixels = read_image(tmp_path / "float.tif")
    scale = 255 if top == 1.0 else 1 if top == 200.0 else 255 / top
    np.testing.assert_array_equal(pixels, np.clip(np.rint(values * scale), 0, 255).astype(np.uint8))
    assert pixels.max() > 150


def test_strokes_in_the_alpha_channel_are_the_picture(tmp_path):
    stroke = np.zeros((8, 8), np.uint8)
    stroke[2:6, 3] = 255
    stroke[4, 2:6] = 128
    for name, colour in (("black-ink", 0), ("white-ink", 255)):
        rgba = np.zeros((8, 8, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = stroke
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"{name}.png")
        np.testing.assert_array_equal(read_image(tmp_path / f"{name}.png"), stroke)
    la = np.stack([np.zeros((8, 8), np.uint8), stroke], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), stroke)


def test_coloured_transparent_image_is_composited_over_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[:2, :, 2] = 200, 100, 50
    rgba[..., 3] = 255
    rgba[:, :2, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    pixels = read_image(tmp_path / "half.png")
    assert pixels.shape == (4, 4, 3)
    np.testing.assert_array_equal(pixels[:, :2], 0)
    np.testing.assert_array_equal(pixels[:, 2:], rgba[:, 2:, :3])


def test_opaque_and_palette_and_bilevel_modes(tmp_path):
    Image.fromarray(np.eye(6, dtype=bool)).save(tmp_path / "one.png")
    np.testing.assert_array_equal(read_image(tmp_path / "one.png"), np.eye(6, dtype=np.uint8) * 255)
    tile = colour_tiles(1, side=6)[0]
    Image.fromarray(tile).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (6, 6, 3)
    Image.fromarray(tile).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").shape == (6, 6, 3)


# --- sizes -----------------------------------------------------------------------------------


def test_pad_and_crop_keep_the_aspect_ratio(tmp_path):
    wide = np.zeros((10, 20), np.uint8)  # 10 tall, 20 wide: a white bar in the middle 10 columns
    wide[:, 5:15] = 255
    Image.fromarray(wide).save(tmp_path / "wide.png")
    padded = read_image(tmp_path / "wide.png", (20, 20), "pad")
    assert padded.shape == (20, 20)
    assert padded[:4].max() == 0 and padded[-4:].max() == 0  # black bands above and below
    assert padded[10, 10] == 255 and padded[10, 1] == 0
    cropped = read_image(tmp_path / "wide.png", (10, 10), "crop")
    assert cropped.shape == (10, 10) and cropped.min() > 200  # the centre (the bar) cut out
    stretched = read_image(tmp_path / "wide.png", (10, 10), "stretch")
    assert stretched.shape == (10, 10) and stretched[:, 0].max() < 100


def test_resize_modes_through_load_dataset_and_same_size_untouched(tmp_path):
    rng = np.random.default_rng(3)
    same = rng.integers(1, 256, (3, 12, 12), dtype=np.uint8)
    for index, image in enumerate(same):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    for mode in ("stretch", "pad", "crop"):
        data = files(tmp_path, size=(12, 12), resize=mode)
        np.testing.assert_array_equal(data.images, same)
        assert data.resize == mode
    Image.fromarray(np.full((6, 24), 255, np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(DatasetError) as raised:
        files(tmp_path)
    message = str(raised.value)
    assert "odd.png is 6x24" in message and "3 of 4 are 12x12" in message and "(HxW)" in message
    assert files(tmp_path, size=(12, 12), resize="pad").name.endswith("-pad")
    with pytest.raises(DatasetError, match="unknown resize"):
        files(tmp_path, size=(12, 12), resize="squash")


# --- names -----------------------------------------------------------------------------------


AWKWARD = [
    "a,b.png",
    'say "hi".png',
    "new\nline.png",
    "ünïcødé 字.png",
    "<img src=x onerror=alert(1)>.png",
    "=1+2.png",
]


def test_awkward_file_names_are_kept_as_paths(tmp_path):
    root = tmp_path / "odd names"
    (root / "cl,ass").mkdir(parents=True)
    for index, name in enumerate(AWKWARD):
        Image.fromarray(np.full((4, 4), index + 1, np.uint8)).save(root / "cl,ass" / name)
    (root / "cl,ass" / "notes.txt").write_text("not an image")
    (root / "readme.md").write_text("neither")
    data = files(root, limit=4)
    assert len(data) == 4 and data.n_not_images_skipped == 2
    for path, image in zip(data.paths, data.images, strict=True):
        assert path.startswith("cl,ass/")
        assert AWKWARD.index(path.removeprefix("cl,ass/")) == image[0, 0] - 1  # paths follow their images
