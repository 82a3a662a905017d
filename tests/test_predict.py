"""minialex-predict and ma.predict: the top classes of your own images from a checkpoint (its
network, classes and normalisation), by image and by folder, as a table or JSON; bad input."""
import json

import numpy as np
import pytest
from PIL import Image

import minialex as ma
from minialex import prediction
from minialex.data import Transform, make_synthetic
from minialex.models import PRETRAINED


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = make_synthetic(tmp_path_factory.mktemp("data") / "few", train_per_class=1, val_per_class=2, quiet=True)
    folder = root / "val"
    (folder / "circle" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


def _expected(model, info, path, crops=False):
    """The softmax of the model on the validation transform of one image, by hand."""
    stats = {"mean": info["mean"], "std": info["std"], "eigvals": np.zeros(3, np.float32),
             "eigvecs": np.eye(3, dtype=np.float32)}
    with Image.open(path) as img:
        x = Transform(info["input_size"], stats, "ten_crop" if crops else "val")(img.convert("RGB"), None)
    x = x if crops else x[None]
    with ma.no_grad():
        logits = model(ma.Tensor(x.astype(np.float32))).numpy().astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).mean(0)


@pytest.mark.parametrize("crops", [False, True])
def test_predict_gives_the_models_softmax_on_the_validation_transform(photos, crops):
    model, info = prediction.load_network(PRETRAINED)
    paths = sorted((photos / "ring").glob("*.jpg")) + sorted((photos / "star").glob("*.jpg"))
    results = ma.predict(PRETRAINED, [str(p) for p in paths], top=3, ten_crop=crops, batch_size=3)
    assert [r["path"] for r in results] == [str(p) for p in paths]
    for r, path in zip(results, paths):
        probs = _expected(model, info, path, crops)
        order = np.argsort(-probs)[:3]
        assert r["classes"] == [info["classes"][k] for k in order]
        np.testing.assert_allclose(r["probabilities"], probs[order], rtol=1e-5)


def test_a_folder_is_walked_and_an_unreadable_image_is_named_and_skipped(photos):
    with pytest.warns(UserWarning, match="skipping .*broken.jpg"):
        results = ma.predict(PRETRAINED, photos, top=1)
    assert len(results) == 20 and all(r["path"].endswith(".jpg") and "broken" not in r["path"] for r in results)
    right = sum(r["classes"][0] == r["path"].split("/")[-2] for r in results)
    assert right >= 16                                              # the shipped network knows these shapes


def test_a_model_of_your_own_with_its_class_names():
    model = ma.nn.Sequential(ma.nn.Flatten(), ma.nn.Linear(3 * 8 * 8, 3))
    model.input_size = 8
    img = Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8))
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        img.save(f"{tmp}/a.png")
        [r] = ma.predict(model, f"{tmp}/a.png", top=2, classes=["x", "y", "z"])
    assert len(r["classes"]) == 2 and set(r["classes"]) <= {"x", "y", "z"}
    assert r["probabilities"][0] >= r["probabilities"][1] and sum(r["probabilities"]) <= 1 + 1e-9
    with pytest.raises(prediction.PredictError, match="classes expected 3 names"):
        ma.predict(model, [], classes=["x"])


def test_the_command_prints_a_table_or_json_lines(photos, capsys):
    assert prediction.main([str(PRETRAINED), str(photos / "square"), "--top", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all("square" in line.split("  ")[1] for line in lines)
    assert prediction.main([str(PRETRAINED), str(photos / "circle"), "--json"]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert len(records) == 2 and "broken.jpg" in err and err.startswith("minialex-predict: ")
    assert all(len(r["classes"]) == 5 and r["probabilities"] == sorted(r["probabilities"], reverse=True)
               for r in records)


@pytest.mark.parametrize("argv,said", [
    (["nowhere.npz", "x.jpg"], "no such file"),
    ([str(PRETRAINED), "x.jpg", "--top", "0"], "--top expected an integer >= 1, got 0"),
    ([str(PRETRAINED), "x.jpg", "--device", "bogus"], "--device bogus"),
])
def test_bad_input_is_one_line_and_exit_2(argv, said, capsys, tmp_path):
    assert prediction.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minialex-predict: error: ") and said in err[0], err
    ma.save({"w": np.ones(3)}, tmp_path / "other.npz")
    assert prediction.main([str(tmp_path / "other.npz"), "x.jpg"]) == 2
    assert "meta/arch is missing" in capsys.readouterr().err
