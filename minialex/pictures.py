"""PNG pictures of a run, drawn with Pillow alone: the first layer's filters (the paper's Figure 3),
the training curves, the per-layer diagnostics, and validation images with their predicted and
true labels.

Sizes are made for a slide (about 1600 pixels wide); `factor` scales a picture and its text (2:
twice as large). The curves and the diagnostics are drawn over the steps when per-step records
are given (a short run still draws real curves), else over the epochs.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BLUE, ORANGE = (31, 119, 180), (230, 110, 20)
PALETTE = [BLUE, ORANGE, (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
           (127, 127, 127), (188, 189, 34), (23, 190, 207)]
UNIT = 1.6      # pixels per layout unit at factor 1: the 1020-unit panels become ~1630 pixels


def _font(u):
    try:
        return ImageFont.load_default(size=max(8, round(12 * u)))
    except TypeError:  # Pillow < 10.1: the bitmap font has one size
        return ImageFont.load_default()


def _factor(factor):
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0.1 <= factor <= 16:
        raise ValueError(f"pictures: factor expected a number in 0.1 .. 16, got {factor!r}")
    return UNIT * factor


def filter_grid(weight, path, scale=None, columns=None, factor=1.0):
    """A convolution's filters (O, 3, KH, KW) as RGB tiles, each stretched to the full 0..255
    range; scale: pixels per weight (default: a grid about 1500 pixels wide, times the factor)."""
    w = np.asarray(weight, dtype=np.float64)
    o, _, kh, kw = w.shape
    columns = columns or int(np.ceil(np.sqrt(o * 2)))
    rows = -(-o // columns)
    scale = scale or max(1, round(940 * _factor(factor) / columns) // max(kh, kw))
    tile_h, tile_w, pad = kh * scale, kw * scale, max(2, scale // 3)
    img = Image.new("RGB", (columns * (tile_w + pad) + pad, rows * (tile_h + pad) + pad), (255, 255, 255))
    for f in range(o):
        a = w[f].transpose(1, 2, 0)
        a = (a - a.min()) / (a.max() - a.min() + 1e-12) * 255
        t = Image.fromarray(a.astype(np.uint8)).resize((tile_w, tile_h), Image.NEAREST)
        img.paste(t, (pad + (f % columns) * (tile_w + pad), pad + (f // columns) * (tile_h + pad)))
    img.save(path)


def _panel(draw, box, title, series, font, u, unit="epoch", y_range=None):
    """A line chart in `box` = (x0, y0, x1, y1) layout units: series = [(label, colour, [(x, value), ...])]."""
    x0, y0, x1, y1 = (v * u for v in box)
    points = [p for _, _, pts in series for p in pts if p[1] is not None and np.isfinite(p[1])]
    draw.text((x0, y0 - 18 * u), title, fill=(0, 0, 0), font=font)
    draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=max(1, round(u)))
    if not points:
        return
    xs = [p[0] for p in points]
    lo, hi = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    if hi - lo < 1e-9:
        hi = lo + 1.0
    xmin, xmax = min(xs), max(max(xs), min(xs) + 1)

    def at(e, v):
        return (x0 + 8 * u + (e - xmin) / (xmax - xmin) * (x1 - x0 - 16 * u),
                y1 - 8 * u - (v - lo) / (hi - lo) * (y1 - y0 - 16 * u))
    draw.text((x0 - 44 * u, y0), f"{hi:.3g}", fill=(0, 0, 0), font=font)
    draw.text((x0 - 44 * u, y1 - 14 * u), f"{lo:.3g}", fill=(0, 0, 0), font=font)
    draw.text((x0, y1 + 4 * u), f"{unit} {xmin}", fill=(0, 0, 0), font=font)
    draw.text((x1 - 70 * u, y1 + 4 * u), f"{unit} {xmax}", fill=(0, 0, 0), font=font)
    r = 2 * u
    for k, (label, colour, pts) in enumerate(series):
        pts = [at(e, v) for e, v in pts if v is not None and np.isfinite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=max(2, round(2 * u)))
        if len(pts) <= 60:
            for x, y in pts:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        draw.text((x1 - 110 * u, y0 + (6 + 14 * k) * u), label, fill=colour, font=font)


def training_curves(history, path, steps=None, factor=1.0):
    """history: the metrics.jsonl records. Three panels: loss, top-1, top-5. steps: a StepLog's
    state ({"records": [{"step", "loss", "top1", ...}], "epoch_ends": {epoch: step}}): with two
    or more records the panels run over the steps (training every few steps, validation at each
    epoch's end)."""
    u = _factor(factor)
    font = _font(u)
    img = Image.new("RGB", (round(1020 * u), round(330 * u)), (255, 255, 255))
    d = ImageDraw.Draw(img)
    records = (steps or {}).get("records", [])
    if len(records) >= 2:
        ends, unit = {int(e): s for e, s in steps.get("epoch_ends", {}).items()}, "step"
        train = {key: [(r["step"], r[key]) for r in records] for key in ("loss", "top1")}

        def val(key):
            return [(ends[h["epoch"]], h.get(key)) for h in history if h["epoch"] in ends]
    else:
        unit = "epoch"
        train = {key: [(h["epoch"], h.get(f"train_{key}")) for h in history] for key in ("loss", "top1")}

        def val(key):
            return [(h["epoch"], h.get(key)) for h in history]
    _panel(d, (60, 40, 320, 290), "loss", [("train", BLUE, train["loss"]), ("val", ORANGE, val("val_loss"))],
           font, u, unit)
    _panel(d, (400, 40, 660, 290), "top-1 accuracy", [("train", BLUE, train["top1"]),
                                                       ("val", ORANGE, val("val_top1"))], font, u, unit, (0, 1))
    _panel(d, (740, 40, 1000, 290), "top-5 accuracy (val)", [("val", ORANGE, val("val_top5"))], font, u, unit, (0, 1))
    img.save(path)


def prediction_grid(images, predicted, truth, classes, path, columns=6, factor=1.0):
    """images (N, H, W, 3) uint8; each captioned 'pred / true', green when right, red when wrong."""
    u = _factor(factor)
    font = _font(u)
    n, h, w = images.shape[:3]
    scale = max(1, round(128 * u) // w)
    tw, th, line = w * scale, h * scale + round(30 * u), round(13 * u)
    gap = round(6 * u)
    rows = -(-n // columns)
    img = Image.new("RGB", (columns * (tw + gap) + gap, rows * (th + gap) + gap), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for i in range(n):
        x, y = gap + (i % columns) * (tw + gap), gap + (i // columns) * (th + gap)
        img.paste(Image.fromarray(images[i]).resize((tw, h * scale), Image.NEAREST), (x, y))
        colour = (0, 140, 0) if predicted[i] == truth[i] else (200, 0, 0)
        d.text((x, y + h * scale + 2), f"{classes[predicted[i]]}"[:16], fill=colour, font=font)
        d.text((x, y + h * scale + 2 + line), f"true: {classes[truth[i]]}"[:16], fill=(60, 60, 60), font=font)
    img.save(path)


def layer_diagnostics(history, path, samples=None, factor=1.0):
    """history: metrics records with a "layers" field. Four panels: the output's std per layer,
    the dead fraction per ReLU, the weight-gradient norm and log10 update ratio per layer with
    weights; over the epochs, or over the steps when `samples` (a LayerDiagnostics' samples,
    [{"step", "layers"}]) holds two or more."""
    u = _factor(factor)
    font = _font(u)
    img = Image.new("RGB", (round(1020 * u), round(680 * u)), (255, 255, 255))
    d = ImageDraw.Draw(img)
    if samples is not None and len(samples) >= 2:
        points, unit = [(s["step"], s["layers"]) for s in samples if s.get("layers")], "step"
    else:
        points, unit = [(h["epoch"], h["layers"]) for h in history if h.get("layers")], "epoch"

    def series(key, names):
        return [(n, PALETTE[k % len(PALETTE)], [(x, layers.get(n, {}).get(key)) for x, layers in points])
                for k, n in enumerate(names)]
    last = points[-1][1] if points else {}
    weighted = [n for n in last if "grad_norm" in last[n]]
    relus = [n for n in last if "dead" in last[n]]
    _panel(d, (60, 40, 480, 300), "activation std (layers with weights)", series("act_std", weighted), font, u, unit)
    _panel(d, (580, 40, 1000, 300), "dead ReLU units (fraction)", series("dead", relus), font, u, unit, (0, 1))
    _panel(d, (60, 380, 480, 640), "weight-gradient norm", series("grad_norm", weighted), font, u, unit)
    _panel(d, (580, 380, 1000, 640), "log10 update / weight (~ -3 is healthy)", series("update_log10", weighted),
           font, u, unit)
    img.save(path)


def confusion_matrix(counts, classes, path, factor=1.0):
    """The (K, K) counts of true class (rows) by predicted class (columns) as a heat map, each row
    shaded by its share of the row (so a small class reads as well as a large one), the counts
    written in the cells while they fit, the class names along both sides (shortened with many
    classes: 100 classes stay readable at about 14 pixels a cell)."""
    counts = np.asarray(counts)
    k = counts.shape[0]
    u = _factor(factor)
    cell = max(10, min(64, round(900 * u / max(k, 1))))
    label_w = round(min(150, 9 * max((len(c) for c in classes), default=4) + 10) * u)
    font = _font(u if k <= 30 else u * 0.8)
    size = (label_w + k * cell + round(20 * u), label_w + k * cell + round(20 * u))
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    limit = max(3, round(label_w / (7 * u)))
    for i in range(k):
        name = str(classes[i])[:limit]
        d.text((round(4 * u), label_w + i * cell + cell / 2), name, fill=(0, 0, 0), font=font, anchor="lm")
        d.text((label_w + i * cell + cell / 2, label_w - round(4 * u)), name if k <= 12 else name[:3],
               fill=(0, 0, 0), font=font, anchor="mb")
        for j in range(k):
            v = float(share[i, j])
            colour = (round(255 - 220 * v), round(255 - 150 * v), 255) if i == j else \
                (255, round(255 - 200 * v), round(255 - 200 * v))
            box = (label_w + j * cell, label_w + i * cell, label_w + (j + 1) * cell - 1, label_w + (i + 1) * cell - 1)
            d.rectangle(box, fill=colour)
            if cell >= 28 and counts[i, j]:
                d.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), str(int(counts[i, j])), fill=(0, 0, 0),
                       font=font, anchor="mm")
    d.text((label_w, round(2 * u)), "predicted ->", fill=(80, 80, 80), font=font)
    img.save(path)
