"""The data pipeline: ImageFolder on every odd case, the paper's transforms, the threaded loader."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from minialex.data import DataLoader, ImageFolder, Transform, dataset_stats
from minialex.data import transforms as T

from minialex.data.folder import load_image

from .test_store import STATS, _epochs, _photo_folder

NEUTRAL = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32),
           "eigvals": np.zeros(3, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}


def _image(rng, mode="RGB", size=(40, 30)):
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(a).convert(mode)


@pytest.fixture
def odd_tree(tmp_path):
    """train/a and train/b with every format and colour mode, a text file, a corrupt and a truncated image."""
    rng = np.random.default_rng(0)
    a, b = tmp_path / "train" / "a", tmp_path / "train" / "b"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    _image(rng).save(a / "rgb.jpg")
    _image(rng, "L").save(a / "GRAY.JPEG")
    _image(rng, "P").save(a / "palette.png")
    _image(rng, "RGBA").save(a / "alpha.PNG")
    _image(rng, "CMYK").save(b / "cmyk.jpg")
    _image(rng).save(b / "w.webp")
    _image(rng).save(b / "m.Bmp")
    (b / "notes.txt").write_text("not an image")
    (b / "corrupt.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    _image(rng, size=(200, 200)).save(b / "full.jpg")
    data = (b / "full.jpg").read_bytes()
    (b / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "train" / ".hidden").mkdir()
    return tmp_path / "train"


def test_image_folder_reads_every_format_and_skips_bad_files(odd_tree):
    folder = ImageFolder(odd_tree)
    assert folder.classes == ["a", "b"]
    names = sorted(p.name for p, _ in folder.samples)
    assert names == sorted(["rgb.jpg", "GRAY.JPEG", "palette.png", "alpha.PNG", "cmyk.jpg", "w.webp", "m.Bmp",
                            "corrupt.jpg", "full.jpg", "truncated.jpg"])
    loaded, bad = {}, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, (path, label) in enumerate(folder.samples):
            img, got_label = folder.load(i)
            assert got_label == label == (0 if path.parent.name == "a" else 1)
            if img is None:
                bad.append(path.name)
            else:
                loaded[path.name] = img
    assert sorted(bad) == ["corrupt.jpg", "truncated.jpg"]
    assert all(img.mode == "RGB" for img in loaded.values())
    messages = " ".join(str(w.message) for w in caught)
    assert "corrupt.jpg" in messages and "truncated.jpg" in messages


def test_loader_reports_skipped_images(odd_tree):
    folder = ImageFolder(odd_tree)
    stats = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32),
             "eigvals": np.zeros(3, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}
    loader = DataLoader(folder, Transform(16, stats, "val"), batch_size=4, workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert sum(len(y) for _, y in batches) == 8 and loader.skipped == 2
    assert all(x.shape[1:] == (3, 16, 16) and x.dtype == np.float32 for x, _ in batches)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "val" / "zebra").mkdir(parents=True)
    _image(np.random.default_rng(0)).save(tmp_path / "val" / "zebra" / "z.jpg")
    with pytest.raises(ValueError, match=r"classes that the training set lacks: \['zebra'\]"):
        ImageFolder(tmp_path / "val", classes=["cat", "dog"])


def test_random_crop_stays_inside_and_flip_mirrors():
    h, w, size = 9, 12, 5
    a = (np.arange(h * w, dtype=np.float32).reshape(h, w, 1) * np.ones(3, np.float32))  # value = row*w + col
    rng = np.random.default_rng(1)
    tops, lefts = set(), set()
    for _ in range(200):
        c = T.random_crop(a, size, rng)
        top, left = divmod(int(c[0, 0, 0]), w)
        assert 0 <= top <= h - size and 0 <= left <= w - size
        np.testing.assert_array_equal(c, a[top:top + size, left:left + size])
        tops.add(top)
        lefts.add(left)
    assert tops == set(range(h - size + 1)) and lefts == set(range(w - size + 1))  # every offset reachable
    np.testing.assert_array_equal(T.hflip(a)[:, 0], a[:, -1])
    centre = T.center_crop(a, size)
    assert int(centre[0, 0, 0]) == 2 * w + 3


def test_pca_lighting_adds_eigvecs_times_scaled_alpha():
    eigvecs = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))[0].astype(np.float32)
    eigvals = np.array([0.5, 1.0, 2.0], np.float32)
    a = np.zeros((4, 4, 3), np.float32)
    out = T.pca_lighting(a, eigvals, eigvecs, np.random.default_rng(3))
    alpha = np.random.default_rng(3).normal(0.0, 0.1, size=3)
    np.testing.assert_allclose(out, np.broadcast_to(eigvecs @ (alpha * eigvals), a.shape), rtol=1e-6)


def test_dataset_stats_find_the_colour_axis(tmp_path):
    rng = np.random.default_rng(4)
    direction = np.array([0.8, 0.5, 0.33])
    direction /= np.linalg.norm(direction)
    for i in range(6):  # pixels vary (almost) only along `direction`
        t = rng.uniform(0, 200, (32, 32, 1))
        a = np.clip(20 + t * direction + rng.normal(0, 1, (32, 32, 3)), 0, 255).astype(np.uint8)
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.fromarray(a).save(tmp_path / "c" / f"{i}.png")
    stats = dataset_stats(ImageFolder(tmp_path))
    pixels = np.concatenate([np.asarray(Image.open(tmp_path / "c" / f"{i}.png").resize((64, 64), Image.BILINEAR),
                                        np.float64).reshape(-1, 3) / 255 for i in range(6)])
    np.testing.assert_allclose(stats["mean"], pixels.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], pixels.std(0), rtol=1e-5)
    top = stats["eigvecs"][:, -1]  # eigh: ascending eigenvalues, eigenvectors as columns
    assert abs(abs(top @ direction) - 1) < 1e-3
    assert stats["eigvals"][-1] > 100 * stats["eigvals"][1]


def test_ten_crops_and_transform_shapes():
    a = np.random.default_rng(5).random((10, 12, 3)).astype(np.float32)
    crops = T.ten_crops(a, 6)
    assert crops.shape == (10, 6, 6, 3)
    np.testing.assert_array_equal(crops[0], a[:6, :6])        # top-left
    np.testing.assert_array_equal(crops[3], a[4:, 6:])        # bottom-right
    np.testing.assert_array_equal(crops[4], a[2:8, 3:9])      # centre
    np.testing.assert_array_equal(crops[5], crops[0][:, ::-1])  # the flipped top-left
    stats = {"mean": np.full(3, 0.5, np.float32), "std": np.full(3, 0.25, np.float32),
             "eigvals": np.ones(3, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}
    img = Image.fromarray((a * 255).astype(np.uint8))
    rng = np.random.default_rng(0)
    assert Transform(8, stats, "train")(img, rng).shape == (3, 8, 8)
    assert Transform(8, stats, "ten_crop")(img, rng).shape == (10, 3, 8, 8)
    v = Transform(8, stats, "val")(img, rng)
    resized = np.asarray(img.resize((11, 9), Image.BILINEAR), np.float32) / 255   # 12x10 to shorter side 9 = resize_for(8)
    centre = resized[0:8, 1:9]                                                    # (9 - 8) // 2, (11 - 8) // 2
    expected = (centre - np.array([0.2, 0.4, 0.6], np.float32)) / np.array([0.25, 0.5, 0.125], np.float32)
    stats = {**stats, "mean": np.array([0.2, 0.4, 0.6], np.float32), "std": np.array([0.25, 0.5, 0.125], np.float32)}
    v = Transform(8, stats, "val")(img, rng)
    assert v.dtype == np.float32 and v.shape == (3, 8, 8)
    np.testing.assert_allclose(v, expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-6)


def test_loader_is_deterministic_per_seed_and_epoch(odd_tree):
    folder = ImageFolder(odd_tree)
    folder.samples = [s for s in folder.samples if "corrupt" not in s[0].name and "trunc" not in s[0].name]
    stats = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32),
             "eigvals": np.full(3, 0.1, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}

    def batches(workers, epoch, seed=0):
        loader = DataLoader(folder, Transform(16, stats, "train"), batch_size=3, shuffle=True, drop_last=True,
                            workers=workers, seed=seed)
        loader.set_epoch(epoch)
        assert len(loader) == 2
        return list(loader)
    first, again = batches(0, 1), batches(2, 1)
    assert len(first) == 2 and all(len(y) == 3 for _, y in first)
    for (x0, y0), (x1, y1) in zip(first, again):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)
    other = batches(2, 2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


# ----- hostile and odd images -----

def _one_class(tmp_path, **images):
    folder = tmp_path / "c"
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        img.save(folder / name)
    return ImageFolder(tmp_path)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(tmp_path):
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)   # 0 .. 63000
    folder = _one_class(tmp_path, **{"ramp.png": Image.fromarray(ramp)})
    with Image.open(tmp_path / "c" / "ramp.png") as raw:
        assert raw.mode in ("I;16", "I")
    img, _ = folder.load(0)
    a = np.asarray(img)
    assert img.mode == "RGB" and a.shape == (8, 8, 3)
    np.testing.assert_array_equal(a[..., 0], np.round(ramp / 257.0).astype(np.uint8))   # not all white


def test_an_extreme_aspect_ratio_is_centre_cropped_before_any_resize(tmp_path):
    line = np.zeros((1, 40000, 3), np.uint8)
    line[0, 19998:20002] = 255                                   # the centre
    folder = _one_class(tmp_path, **{"line.png": Image.fromarray(line)})
    img, _ = folder.load(0)
    assert img.size == (4, 1) and (np.asarray(img) == 255).all()  # MAX_ASPECT = 4: the centre 4 pixels
    tall = _one_class(tmp_path / "t", **{"tall.png": Image.new("RGB", (10, 100))}).load(0)[0]
    assert tall.size == (10, 40)
    from minialex.data.transforms import Transform
    stats = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32),
             "eigvals": np.zeros(3, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}
    assert Transform(64, stats, "train")(img, np.random.default_rng(0)).shape == (3, 64, 64)


@pytest.mark.parametrize("orientation, upright", [
    (2, lambda a: a[:, ::-1]),                 # mirrored
    (3, lambda a: np.rot90(a, 2)),             # upside down
    (6, lambda a: np.rot90(a, -1)),            # a phone held upright: turn a quarter clockwise
    (8, lambda a: np.rot90(a, 1)),             # turn a quarter anticlockwise
])
def test_a_photos_exif_orientation_is_applied_by_every_path(tmp_path, orientation, upright):
    """A JPEG stored sideways with an orientation tag comes out as it is meant to be seen: from
    ImageFolder.load, from the decoded store's first pass, and from per-epoch decoding."""
    from minialex.data import store
    a = np.zeros((40, 60, 3), np.uint8)                       # 60 wide, 40 high, a white top-left corner
    a[:10, :15] = 255
    a[30:, 45:, 2] = 200                                      # and a blue bottom-right one
    (tmp_path / "d" / "c").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "d" / "c" / "phone.jpg"
    Image.fromarray(a).save(path, exif=exif, quality=95)
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))               # the pixels as the file holds them
    want = upright(stored)
    folder = ImageFolder(tmp_path / "d")
    img, _ = folder.load(0)
    np.testing.assert_array_equal(np.asarray(img), want)
    np.testing.assert_array_equal(np.asarray(load_image(path)[0]), want)
    size = 16
    resize = T.resize_for(size)
    with Image.open(path) as raw:                             # JPEG's reduced decoding, as the pipeline's
        raw.draft("RGB", (resize, resize))
        small = upright(np.asarray(raw.convert("RGB")))
    expected = np.asarray(T.resize_shorter(Image.fromarray(np.ascontiguousarray(small)), resize))
    np.testing.assert_array_equal(store.decoded(path, resize)[0], expected)
    for cache in (False, True, True):                         # decoding; the store's first pass; the store
        loader = DataLoader(folder, Transform(size, NEUTRAL, "val"), batch_size=1, cache=cache, workers=0)
        (x, _), = list(loader)
        top, left = (expected.shape[0] - size) // 2, (expected.shape[1] - size) // 2
        np.testing.assert_allclose(x[0].transpose(1, 2, 0), expected[top:top + size, left:left + size] / 255.0,
                                   rtol=0, atol=1e-6)
    assert store.Store.find(folder, resize).image(0).shape == expected.shape


def test_nonsense_dataloader_arguments_are_errors_that_name_the_argument(odd_tree):
    from minialex.data.loader import ArgumentError
    folder, t = ImageFolder(odd_tree), Transform(16, NEUTRAL, "val")
    cases = [
        (("a/path", t), {}, r"DataLoader: folder expected an ImageFolder \(or anything with samples and load\), got str"),
        ((odd_tree, t), {}, r"DataLoader: folder expected an ImageFolder .*, got \w*Path"),
        ((None, t), {}, r"DataLoader: folder expected .*, got NoneType"),
        ((folder, "val"), {}, r"DataLoader: transform expected a Transform .*, got str"),
        ((folder, None), {}, r"DataLoader: transform expected a Transform .*, got NoneType"),
        ((folder, t), {"batch_size": 0}, r"DataLoader: batch_size expected an integer >= 1, got 0"),
        ((folder, t), {"batch_size": 2.5}, r"DataLoader: batch_size expected an integer >= 1, got 2.5"),
        ((folder, t), {"workers": True}, r"DataLoader: workers expected an integer >= 0, got True"),
        ((folder, t), {"seed": -1}, r"DataLoader: seed expected an integer >= 0, got -1"),
        ((folder, t), {"prefetch": "2"}, r"DataLoader: prefetch expected an integer >= 0, got '2'"),
        ((folder, t), {"shuffle": "yes"}, r"DataLoader: shuffle expected True or False, got 'yes'"),
        ((folder, t), {"drop_last": None}, r"DataLoader: drop_last expected True or False, got None"),
        ((folder, t), {"cache": 2}, r"DataLoader: cache expected True or False, got 2"),
        ((folder, t), {"device": 0}, r"DataLoader: device expected None, .*got 0"),
        ((folder, t), {"shard": (1, 1)}, r"DataLoader: shard expected \(rank, size\) with 0 <= rank < size, got \(1, 1\)"),
        ((folder, t), {"shard": "01"}, r"DataLoader: shard expected .*, got '01'"),
    ]
    for args, kw, message in cases:
        with pytest.raises(ArgumentError, match=message) as caught:
            DataLoader(*args, **kw)
        assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match=r"DataLoader.set_epoch: epoch expected an integer >= 0, got 'one'"):
        DataLoader(folder, t).set_epoch("one")
    loader = DataLoader(folder, t, batch_size=np.int64(4), shuffle=1, seed=np.int32(3), shard=[0, 1])
    assert (loader.batch_size, loader.shuffle, loader.seed, loader.shard) == (4, True, 3, (0, 1))


def test_anything_with_samples_and_load_is_a_folder_decoded_every_epoch_without_a_fingerprint(odd_tree):
    """A folder-like object of one's own (no fingerprint, so no key for a store): batches, decoded."""
    real = ImageFolder(odd_tree)

    class Listing:
        samples = [s for s in real.samples if "corrupt" not in s[0].name and "trunc" not in s[0].name]

        def __len__(self):
            return len(self.samples)

        def load(self, i, min_side=None):
            return load_image(self.samples[i][0], min_side)[0], self.samples[i][1]
    loader = DataLoader(Listing(), Transform(16, NEUTRAL, "val"), batch_size=4, workers=2)
    labels = np.concatenate([y for _, y in loader])
    assert labels.tolist() == [label for _, label in Listing.samples] and not loader.cache


def test_images_over_the_pixel_bound_or_pillows_bomb_limit_are_skipped_by_name(tmp_path, monkeypatch):
    from minialex.data import folder as folder_module
    folder = _one_class(tmp_path, **{"big.png": Image.new("RGB", (300, 200)), "ok.png": Image.new("RGB", (20, 20))})
    monkeypatch.setattr(folder_module, "MAX_PIXELS", 10_000)
    with pytest.warns(UserWarning, match=r"big.png: 300x200 pixels, more than"):
        assert folder.load(0) == (None, 0)
    assert folder.load(1)[0].size == (20, 20)
    monkeypatch.setattr(folder_module, "MAX_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)          # Pillow's own decompression-bomb check
    fresh = ImageFolder(tmp_path)
    with pytest.warns(UserWarning, match=r"big.png: too many pixels, a possible decompression bomb"):
        assert fresh.load(0) == (None, 0)


def test_links_never_lead_out_of_the_root(tmp_path):
    root = tmp_path / "data"
    for split, cls in (("train", "cat"), ("train", "dog"), ("val", "cat")):
        (root / split / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / cls / f"{split}_{cls}.png")
    (root / "train" / "everything").symlink_to(root / "train")          # the split's own root
    (root / "train" / "valcats").symlink_to(root / "val" / "cat")       # another split
    (root / "train" / "dogs_too").symlink_to(root / "train" / "dog")    # another class
    (root / "train" / "cat" / "stolen.png").symlink_to(root / "val" / "cat" / "val_cat.png")
    (root / "train" / "cat" / "loop").symlink_to(root / "train" / "cat")   # a loop inside the class
    with pytest.warns(UserWarning) as caught:
        folder = ImageFolder(root / "train")
    names = sorted(p.name for p, _ in folder.samples)
    assert names == ["train_cat.png", "train_dog.png"]
    said = " ".join(str(w.message) for w in caught)
    assert "everything" in said and "valcats" in said and "dogs_too" in said and "stolen.png" in said


def test_a_deep_tree_is_walked_without_recursion(tmp_path):
    levels = [tmp_path / "c"]
    for _ in range(1200):                                               # deeper than the recursion limit
        levels.append(levels[-1] / "d")
    for level in levels:
        level.mkdir()                                                   # (mkdir(parents=True) would recurse)
    Image.new("RGB", (8, 8)).save(levels[-1] / "x.png")
    try:
        assert len(ImageFolder(tmp_path)) == 1
    finally:  # removed here, bottom up: shutil.rmtree (pytest's clean-up) would recurse too deep
        (levels[-1] / "x.png").unlink()
        for level in reversed(levels):
            level.rmdir()


def test_statistics_cache_follows_content_and_rebuilds_a_damaged_file(tmp_path, monkeypatch):
    from minialex import train
    monkeypatch.setenv("MINIALEX_CACHE", str(tmp_path / "cache"))
    folder_path = tmp_path / "data"
    _one_class(folder_path, **{"a.png": Image.new("RGB", (16, 16), (10, 20, 30))})
    calls = []
    real = train.dataset_stats
    monkeypatch.setattr(train, "dataset_stats", lambda f: calls.append(1) or real(f))
    first = train._stats_for(ImageFolder(folder_path))
    assert train._stats_for(ImageFolder(folder_path))["mean"].tolist() == first["mean"].tolist() and len(calls) == 1
    path = folder_path / "c" / "a.png"
    size = path.stat().st_size
    Image.new("RGB", (16, 16), (200, 100, 50)).save(path)              # new content, the same size
    assert path.stat().st_size == size
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = train._stats_for(ImageFolder(folder_path))
    assert len(calls) == 2 and second["mean"][0] > first["mean"][0]
    cache = next((tmp_path / "cache" / "stats").glob("*.npz"))
    for f in (tmp_path / "cache" / "stats").glob("*.npz"):
        f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=f"{cache.parent}.* is damaged"):
        np.testing.assert_allclose(train._stats_for(ImageFolder(folder_path))["mean"], second["mean"])
    assert len(calls) == 3


def test_no_flip_and_no_lighting(tmp_path):
    a = (np.random.default_rng(6).random((12, 12, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(a)
    stats = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32),
             "eigvals": np.ones(3, np.float32), "eigvecs": np.eye(3, dtype=np.float32)}
    plain = [T.Transform(10, stats, "train", flip=False, lighting=False)(img, np.random.default_rng(s)) for s in range(20)]
    flipped_some = [T.Transform(10, stats, "train", flip=True, lighting=False)(img, np.random.default_rng(s)) for s in range(20)]
    resized = T.to_array(T.resize_shorter(img, T.resize_for(10)))
    for x in plain:  # every output is an unflipped crop, with no colour noise
        crops = [resized[t:t + 10, l:l + 10].transpose(2, 0, 1) for t in range(2) for l in range(2)]
        assert any(np.allclose(x, c, atol=1e-6) for c in crops)
    assert sum(not np.allclose(p, f) for p, f in zip(plain, flipped_some)) >= 5   # flips happen by default
    lit = T.Transform(10, stats, "train", flip=False, lighting=True)(img, np.random.default_rng(0))
    assert not np.allclose(lit, plain[0])


def test_link_loops_and_undecodable_names_are_survived(tmp_path):
    from minialex import train
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "x.png")
    (tmp_path / "a" / "self.png").symlink_to(tmp_path / "a" / "self.png")      # a link to itself
    odd = os.fsdecode(b"\xff\xfe.png")                                          # not UTF-8
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / odd)
    with pytest.warns(UserWarning, match="self.png"):
        folder = ImageFolder(tmp_path)
    assert sorted(p.name for p, _ in folder.samples) == sorted(["x.png", "x.png", odd])
    assert folder.load(2)[0] is not None or folder.load(1)[0] is not None
    stats = train._stats_for(folder)                                           # hashing the odd name
    assert stats["mean"].shape == (3,)


def test_a_statistics_cache_of_the_wrong_shape_is_rebuilt(tmp_path, monkeypatch):
    from minialex import io, train
    monkeypatch.setenv("MINIALEX_CACHE", str(tmp_path / "cache"))
    folder = _one_class(tmp_path / "d", **{"a.png": Image.new("RGB", (16, 16), (10, 20, 30))})
    good = train._stats_for(folder)
    cache = next((tmp_path / "cache" / "stats").glob("*.npz"))
    for damage in ({"mean": np.zeros((3, 1, 1), np.float32)}, {"eigvals": np.full(3, np.nan, np.float32)}):
        io.save({**good, **damage}, cache)
        with pytest.warns(UserWarning, match="is damaged"):
            again = train._stats_for(folder)
        np.testing.assert_allclose(again["mean"], good["mean"])


# ----- device batches -----

def test_device_batches_on_the_emulator_equal_the_host_batches(tmp_path, monkeypatch):
    """kernels/augment.cu against its NumPy reference: the same batches bit for bit, train and val."""
    import minialex as ma
    from minialex.data.augment import augment_batch
    monkeypatch.setenv("MINIALEX_STORES", str(tmp_path / "stores"))
    folder = _photo_folder(tmp_path)
    for mode in ("train", "val"):
        host = _epochs(folder, [1, 2], cache=True, workers=0) if mode == "train" else None
        for epoch in (1, 2):
            kw = dict(batch_size=3, shuffle=True, drop_last=True, seed=5, workers=0)
            t = Transform(16, STATS, mode)
            dev = DataLoader(folder, t, device="cuda-emu", **kw)
            dev.set_epoch(epoch)
            cpu = DataLoader(folder, t, **kw)
            cpu.set_epoch(epoch)
            got, want = list(dev), list(cpu)
            assert len(got) == len(want) == 3
            for (xd, yd), (xc, yc) in zip(got, want):
                assert isinstance(xd, ma.Tensor) and xd.device == "cuda-emu" and xd.dtype == np.float32
                np.testing.assert_array_equal(xd.numpy(), xc)
                np.testing.assert_array_equal(yd, yc)
            if host is not None:
                for (xh, _), (xc, _) in zip(host[epoch - 1], want):
                    np.testing.assert_array_equal(xh, xc)
    r = np.random.default_rng(3)
    crops = r.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    flips, offsets = np.array([True, False, True, False]), r.normal(0, 0.1, (4, 3)).astype(np.float32)
    from minialex.cpu.augment import augment_batch as fast
    np.testing.assert_array_equal(fast(crops.copy(), flips, offsets, STATS["mean"], STATS["std"]),
                                  augment_batch(crops, flips, offsets, STATS["mean"], STATS["std"]))
