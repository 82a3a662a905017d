"""minialex-prepare --from idx|cifar10|cifar100: the classic data sets' files as the folder layout
minialex trains on; their headers checked against their lengths; atomic; never a pickled file."""
import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from minialex import prepare, train
from minialex.data import ImageFolder, convert


def _idx(path, array, kind=0x08, gz=False):
    body = bytes([0, 0, kind, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(convert.IDX_TYPES[kind]).tobytes()
    (gzip.open if gz else open)(path, "wb").write(body)
    return path


@pytest.fixture
def mnist(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 3, 30).astype(np.uint8)
    labels[:3] = [0, 1, 2]
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_become_class_folders_of_the_same_pixels(tmp_path, mnist, gz):
    images, labels = mnist
    x = _idx(tmp_path / "img.idx", images, gz=gz)
    y = _idx(tmp_path / "lab.idx", labels, gz=gz)
    assert prepare.main(["--from", "idx", str(x), str(y), str(tmp_path / "mnist")]) == 0
    folder = ImageFolder(tmp_path / "mnist" / "train")
    assert folder.classes == ["0", "1", "2"] and len(folder) == 30
    for i in (0, 7, 29):
        path = tmp_path / "mnist" / "train" / str(labels[i]) / f"{i:06d}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(path)), images[i])
    assert not list((tmp_path / "mnist").glob(".*partial*"))


def test_a_converted_mnist_trains(tmp_path, mnist):
    images, labels = mnist
    out = tmp_path / "mnist"
    for split, part in (("train", slice(0, 24)), ("val", slice(24, 30))):
        prepare.main(["--from", "idx", str(_idx(tmp_path / f"{split}-x", images[part])),
                      str(_idx(tmp_path / f"{split}-y", labels[part])), str(out), "--split", split])
    if set(ImageFolder(out / "val").classes) - set(ImageFolder(out / "train").classes):
        pytest.skip("a val class not in train for this draw")
    assert train.main(["--data", str(out), "--epochs", "1", "--batch-size", "8", "--no-flip", "--no-lighting",
                       "--out", str(tmp_path / "run"), "--workers", "0"]) == 0


def _bad_idx(tmp_path, mnist):
    images, labels = mnist
    good = _idx(tmp_path / "good.idx", images).read_bytes()
    cases = [(b"\x08\x08\x08\x03" + good[4:], "not an IDX file"),
             (good[:2] + b"\x07" + good[3:], "IDX type byte 0x07"),
             (good[:-100], "but it holds"),                              # truncated
             (good + b"\x00" * 10, "but it holds more"),
             (good[:6], "cut short"),
             (b"", "not an IDX file")]
    for k, (content, said) in enumerate(cases):
        path = tmp_path / f"bad{k}.idx"
        path.write_bytes(content)
        yield path, said
    truncated_gz = tmp_path / "cut.gz"
    truncated_gz.write_bytes(gzip.compress(good)[:400])
    yield truncated_gz, "a truncated or damaged download"


def test_malformed_idx_files_are_refused_naming_the_file(tmp_path, mnist, capsys):
    labels = _idx(tmp_path / "lab.idx", mnist[1])
    for path, said in _bad_idx(tmp_path, mnist):
        with pytest.raises(SystemExit) as exit_:
            prepare.main(["--from", "idx", str(path), str(labels), str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and str(path) in err and said in err and "Traceback" not in err, (said, err)
        assert not (tmp_path / "out" / "train").exists()
    few = _idx(tmp_path / "few.idx", mnist[1][:5])
    with pytest.raises(SystemExit):
        prepare.main(["--from", "idx", str(_idx(tmp_path / "x.idx", mnist[0])), str(few), str(tmp_path / "out")])
    assert "30 images but 5 labels" in capsys.readouterr().err


def test_a_killed_conversion_leaves_no_folder_that_looks_done(tmp_path, mnist, monkeypatch):
    images, labels = mnist
    real, calls = Image.Image.save, {"n": 0}

    def dies(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(Image.Image, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        convert.idx_to_folder(_idx(tmp_path / "x", images), _idx(tmp_path / "y", labels), tmp_path / "out",
                              workers=1)
    assert not (tmp_path / "out" / "train").exists() and not list((tmp_path / "out").iterdir())


def _cifar(folder, kind, count=12):
    rng = np.random.default_rng(1)
    spec = convert.CIFAR[kind]
    folder.mkdir()
    truth = {}
    for name in spec["train"] + spec["val"]:
        labels = rng.integers(0, spec["classes"], (count, spec["labels"])).astype(np.uint8)
        pixels = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, pixels.reshape(count, -1)], axis=1).tobytes())
        truth[name] = (labels[:, -1], pixels.transpose(0, 2, 3, 1))
    (folder / spec["names"]).write_text("\n".join(f"name{k:03d}" for k in range(spec["classes"])) + "\n")
    return truth


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_binary_batches_become_train_and_val(tmp_path, kind):
    truth = _cifar(tmp_path / "bin", kind)
    assert prepare.main(["--from", kind, str(tmp_path / "bin"), str(tmp_path / "out")]) == 0
    spec = convert.CIFAR[kind]
    train_count = sum(1 for _ in (tmp_path / "out" / "train").rglob("*.png"))
    assert train_count == 12 * len(spec["train"]) and sum(1 for _ in (tmp_path / "out" / "val").rglob("*.png")) == 12
    labels, pixels = truth[spec["val"][0]]
    for i in (0, 11):
        path = tmp_path / "out" / "val" / f"name{labels[i]:03d}" / f"{i:06d}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(path)), pixels[i])   # planes -> HWC, fine labels


def test_cifar_refuses_the_pickled_version_and_damaged_batches(tmp_path, capsys):
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "data_batch_1").write_bytes(b"\x80\x04 pickled")
    with pytest.raises(SystemExit):
        prepare.main(["--from", "cifar10", str(tmp_path / "py"), str(tmp_path / "out")])
    assert "never unpickles" in capsys.readouterr().err
    _cifar(tmp_path / "bin", "cifar10")
    batch = tmp_path / "bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-7])
    with pytest.raises(SystemExit):
        prepare.main(["--from", "cifar10", str(tmp_path / "bin"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "data_batch_3.bin" in err and "whole number of 3073-byte records" in err
    assert not (tmp_path / "out" / "train").exists()
