"""ma.draw_graph(tensor, path): the computation graph behind a tensor, as a picture or as text.

    loss = F.cross_entropy(model(x), y)
    loss.backward()
    ma.draw_graph(loss, "graph.svg", model=model)   # parameters labelled by their names in model

Nodes: each op (its name and output shape) and each leaf (an input or a parameter, named when
`names` says how); arrows carry tensors from the op (or leaf) that made them to the op that reads
them. After backward, a tensor that holds a gradient (a leaf, or one that called retain_grad())
shows |grad|, its norm. ".dot" writes Graphviz text; ".png" and ".svg" are drawn by Graphviz's
`dot` when it is installed, else by minialex (a layered layout: each node one level past its
deepest input), left to right by default, so that the drawing fits a slide.
"""
import html
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import backend


def _nodes(root, names):
    """[(id, label, [input ids])] in an order where inputs come first."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._ctx is not None:
            stack.extend((i, False) for i in t._ctx.inputs if i is not None and id(i) not in seen)
    nodes = []
    for t in order:
        shape = "x".join(str(d) for d in t.shape) or "scalar"
        if t._ctx is None:
            label = f"{names.get(id(t), 'input' if t.requires_grad else 'constant')}\n{shape}"
        else:
            label = f"{t._ctx.name()}\n{shape}"
        if t.grad is not None:
            label += f"\n|grad| {float(np.linalg.norm(backend.to_numpy(t.grad))):.3g}"
        inputs = [id(i) for i in t._ctx.inputs if i is not None] if t._ctx is not None else []
        nodes.append((id(t), label, inputs, t._ctx is None))
    return nodes


def to_dot(root, names=None, direction="LR"):
    """Graphviz text of the graph behind `root` (direction "LR": left to right, for slides; "TB": top down)."""
    lines = ["digraph minialex {", f"  rankdir={direction};", '  node [fontname="Helvetica", fontsize=12];']
    for nid, label, inputs, leaf in _nodes(root, names or {}):
        shape = "ellipse" if leaf else "box"
        text = label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'  n{nid} [label="{text}", shape={shape}];')
        lines += [f"  n{i} -> n{nid};" for i in inputs]
    return "\n".join(lines + ["}"]) + "\n"


def draw_graph(root, path, names=None, model=None, direction="LR"):
    """Write the graph behind tensor `root` to `path`: .png, .svg (a drawing that scales to any
    slide) or .dot (Graphviz text). names: {id(tensor): name}; model: label its parameters by
    their names in it ("conv1.weight"). direction: "LR" (left to right: landscape, the default)
    or "TB" (top down). Graphviz's `dot` draws .png and .svg when installed; else minialex does."""
    path = Path(path)
    if direction not in ("LR", "TB"):
        raise ValueError(f"draw_graph: direction expected 'LR' or 'TB', got {direction!r}")
    if path.suffix not in (".png", ".svg", ".dot"):
        raise ValueError(f"draw_graph: path expected a .png, .svg or .dot file, got {path}")
    names = dict(names or {})
    if model is not None:
        names.update({id(p): n for n, p in model.named_parameters()})
    if path.suffix == ".dot":
        path.write_text(to_dot(root, names, direction))
        return path
    dot = shutil.which("dot")
    if dot:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "graph.dot"
            source.write_text(to_dot(root, names, direction))
            command = [dot, f"-T{path.suffix[1:]}", "-Gdpi=150", str(source), "-o", str(path)]
            if subprocess.run(command, capture_output=True).returncode == 0:
                return path
    layout = _layout(_nodes(root, names), direction)
    (_svg if path.suffix == ".svg" else _png)(layout, path)
    return path


BOX_W, BOX_H, GAP, LINE = 190, 66, 36, 16      # a node's box, the space between, a text line (pixels)


def _layout(nodes, direction):
    """Each op one level past its deepest input, a leaf one level before the first op reading it;
    levels are columns (LR) or rows (TB). (nodes, {id: (x, y) of the box's corner}, (width, height))."""
    level, consumers = {}, {}
    for nid, _, inputs, _ in nodes:
        level[nid] = 1 + max((level[i] for i in inputs), default=-1)
        for i in inputs:
            consumers.setdefault(i, []).append(nid)
    for nid, _, _, leaf in nodes:
        if leaf and nid in consumers:
            level[nid] = max(0, min(level[c] for c in consumers[nid]) - 1)
    ranks = {}
    for node in nodes:
        ranks.setdefault(level[node[0]], []).append(node[0])
    depth, breadth = len(ranks), max(len(r) for r in ranks.values())
    along, across = (BOX_W + GAP, BOX_H + GAP) if direction == "LR" else (BOX_H + GAP, BOX_W + GAP)
    corner = {}
    for lv, members in ranks.items():
        offset = (breadth - len(members)) * across / 2
        for k, nid in enumerate(members):
            a, b = GAP + lv * along, GAP + offset + k * across
            corner[nid] = (a, b) if direction == "LR" else (b, a)
    size = (GAP + depth * along, GAP + breadth * across) if direction == "LR" else \
        (GAP + breadth * across, GAP + depth * along)
    return nodes, corner, (int(size[0]), int(size[1])), direction


def _ends(corner, nid, direction, start):
    """Where an arrow leaves (start) or reaches a node's box."""
    x, y = corner[nid]
    if direction == "LR":
        return (x + BOX_W, y + BOX_H / 2) if start else (x, y + BOX_H / 2)
    return (x + BOX_W / 2, y + BOX_H) if start else (x + BOX_W / 2, y)


def _png(layout, path):
    nodes, corner, size, direction = layout
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for nid, _, inputs, _ in nodes:
        for i in inputs:
            draw.line([_ends(corner, i, direction, True), _ends(corner, nid, direction, False)], fill=(120, 120, 120),
                      width=2)
    for nid, label, _, leaf in nodes:
        x, y = corner[nid]
        box = [x, y, x + BOX_W, y + BOX_H]
        if leaf:
            draw.ellipse(box, fill=(230, 240, 255), outline=(60, 90, 160), width=2)
        else:
            draw.rectangle(box, fill=(255, 245, 225), outline=(160, 110, 40), width=2)
        for j, text in enumerate(label.split("\n")):
            draw.text((x + BOX_W / 2, y + 8 + LINE * j), text, fill="black", anchor="mt", font=font)
    img.save(path)


def _svg(layout, path):
    nodes, corner, (width, height), direction = layout
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">',
           '<rect width="100%" height="100%" fill="white"/>']
    for nid, _, inputs, _ in nodes:
        for i in inputs:
            (x1, y1), (x2, y2) = _ends(corner, i, direction, True), _ends(corner, nid, direction, False)
            out.append(f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="#787878" stroke-width="2"/>')
    for nid, label, _, leaf in nodes:
        x, y = corner[nid]
        if leaf:
            out.append(f'<ellipse cx="{x + BOX_W / 2:.0f}" cy="{y + BOX_H / 2:.0f}" rx="{BOX_W / 2}" ry="{BOX_H / 2}" '
                       'fill="#e6f0ff" stroke="#3c5aa0" stroke-width="2"/>')
        else:
            out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" fill="#fff5e1" '
                       'stroke="#a06e28" stroke-width="2"/>')
        for j, text in enumerate(label.split("\n")):
            out.append(f'<text x="{x + BOX_W / 2:.0f}" y="{y + 20 + LINE * j:.0f}" text-anchor="middle">'
                       f'{html.escape(text)}</text>')
    path.write_text("\n".join(out + ["</svg>"]) + "\n")
