"""PNG pictures of a run, drawn with Pillow alone: conv1's filters (the paper's Figure 3), the
training curves, and validation images with their predicted and true labels."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: the bitmap font has one size
        return ImageFont.load_default()


def filter_grid(weight, path, scale=None, columns=None):
    """conv1's filters (O, 3, KH, KW) as RGB tiles, each stretched to the full 0..255 range."""
    w = np.asarray(weight, dtype=np.float64)
    o, _, kh, kw = w.shape
    columns = columns or int(np.ceil(np.sqrt(o * 2)))
    rows = -(-o // columns)
    scale = scale or max(1, 48 // kh)
    tile, pad = kh * scale, 2
    img = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + pad) + pad), (255, 255, 255))
    for f in range(o):
        a = w[f].transpose(1, 2, 0)
        a = (a - a.min()) / (a.max() - a.min() + 1e-12) * 255
        t = Image.fromarray(a.astype(np.uint8)).resize((kw * scale, tile), Image.NEAREST)
        img.paste(t, (pad + (f % columns) * (tile + pad), pad + (f // columns) * (tile + pad)))
    img.save(path)


def _panel(draw, box, title, series, font, y_range=None):
    """A line chart in `box` = (x0, y0, x1, y1): series = [(label, colour, [(epoch, value), ...])]."""
    x0, y0, x1, y1 = box
    points = [p for _, _, pts in series for p in pts if p[1] is not None and np.isfinite(p[1])]
    draw.text((x0, y0 - 18), title, fill=(0, 0, 0), font=font)
    draw.rectangle(box, outline=(0, 0, 0))
    if not points:
        return
    xs = [p[0] for p in points]
    lo, hi = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    if hi - lo < 1e-9:
        hi = lo + 1.0
    xmin, xmax = min(xs), max(max(xs), min(xs) + 1)

    def at(e, v):
        return (x0 + 8 + (e - xmin) / (xmax - xmin) * (x1 - x0 - 16),
                y1 - 8 - (v - lo) / (hi - lo) * (y1 - y0 - 16))
    draw.text((x0 - 44, y0), f"{hi:.3g}", fill=(0, 0, 0), font=font)
    draw.text((x0 - 44, y1 - 14), f"{lo:.3g}", fill=(0, 0, 0), font=font)
    draw.text((x0, y1 + 4), f"epoch {xmin}", fill=(0, 0, 0), font=font)
    draw.text((x1 - 60, y1 + 4), f"epoch {xmax}", fill=(0, 0, 0), font=font)
    for k, (label, colour, pts) in enumerate(series):
        pts = [at(e, v) for e, v in pts if v is not None and np.isfinite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((x1 - 110, y0 + 6 + 14 * k), label, fill=colour, font=font)


def training_curves(history, path):
    """history: the metrics.jsonl records. Three panels: loss, top-1, top-5."""
    font = _font()
    img = Image.new("RGB", (1020, 330), (255, 255, 255))
    d = ImageDraw.Draw(img)
    e = [h["epoch"] for h in history]

    def s(key):
        return list(zip(e, [h.get(key) for h in history]))
    blue, orange = (31, 119, 180), (230, 110, 20)
    _panel(d, (60, 40, 320, 290), "loss", [("train", blue, s("train_loss")), ("val", orange, s("val_loss"))], font)
    _panel(d, (400, 40, 660, 290), "top-1 accuracy", [("train", blue, s("train_top1")),
                                                       ("val", orange, s("val_top1"))], font, (0, 1))
    _panel(d, (740, 40, 1000, 290), "top-5 accuracy (val)", [("val", orange, s("val_top5"))], font, (0, 1))
    img.save(path)


def prediction_grid(images, predicted, truth, classes, path, columns=6):
    """images (N, H, W, 3) uint8; each captioned 'pred / true', green when right, red when wrong."""
    font = _font()
    n, h, w = images.shape[:3]
    scale = max(1, 128 // w)
    tw, th = w * scale, h * scale + 30
    rows = -(-n // columns)
    img = Image.new("RGB", (columns * (tw + 6) + 6, rows * (th + 6) + 6), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for i in range(n):
        x, y = 6 + (i % columns) * (tw + 6), 6 + (i // columns) * (th + 6)
        img.paste(Image.fromarray(images[i]).resize((tw, h * scale), Image.NEAREST), (x, y))
        colour = (0, 140, 0) if predicted[i] == truth[i] else (200, 0, 0)
        d.text((x, y + h * scale + 2), f"{classes[predicted[i]]}"[:16], fill=colour, font=font)
        d.text((x, y + h * scale + 15), f"true: {classes[truth[i]]}"[:16], fill=(60, 60, 60), font=font)
    img.save(path)


def layer_diagnostics(history, path):
    """history: metrics records with a "layers" field. Four panels over the epochs: the output's
    std per layer, the dead fraction per ReLU, the weight-gradient norm and log10 update ratio per
    layer with weights."""
    font = _font()
    img = Image.new("RGB", (1020, 680), (255, 255, 255))
    d = ImageDraw.Draw(img)
    palette = [(31, 119, 180), (230, 110, 20), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    records = [h for h in history if h.get("layers")]

    def series(key, names):
        return [(n, palette[k % len(palette)], [(h["epoch"], h["layers"].get(n, {}).get(key)) for h in records])
                for k, n in enumerate(names)]
    names = list(records[-1]["layers"]) if records else []
    weighted = [n for n in names if "grad_norm" in records[-1]["layers"][n]]
    relus = [n for n in names if "dead" in records[-1]["layers"][n]]
    _panel(d, (60, 40, 480, 300), "activation std (layers with weights)", series("act_std", weighted), font)
    _panel(d, (580, 40, 1000, 300), "dead ReLU units (fraction)", series("dead", relus), font, (0, 1))
    _panel(d, (60, 380, 480, 640), "weight-gradient norm", series("grad_norm", weighted), font)
    _panel(d, (580, 380, 1000, 640), "log10 update / weight (~ -3 is healthy)", series("update_log10", weighted), font)
    img.save(path)
