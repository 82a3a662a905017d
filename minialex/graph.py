"""ma.draw_graph(tensor, path): the computation graph behind a tensor, as a picture or as text.

    loss = F.cross_entropy(model(x), y)
    loss.backward()
    ma.draw_graph(loss, "graph.png", names={id(p): n for n, p in model.named_parameters()})

Nodes: each op (its name and output shape) and each leaf (an input or a parameter, named when
`names` says how); arrows carry tensors from the op (or leaf) that made them to the op that reads
them. After backward, a tensor that holds a gradient (a leaf, or one that called retain_grad())
shows |grad|, its norm. ".dot" writes Graphviz text; ".png" is drawn by Graphviz's `dot` when it is
installed, else with Pillow (a layered layout: each node one row below its deepest input).
"""
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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


def to_dot(root, names=None):
    """Graphviz text of the graph behind `root`."""
    lines = ["digraph minialex {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    for nid, label, inputs, leaf in _nodes(root, names or {}):
        shape = "ellipse" if leaf else "box"
        text = label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'  n{nid} [label="{text}", shape={shape}];')
        lines += [f"  n{i} -> n{nid};" for i in inputs]
    return "\n".join(lines + ["}"]) + "\n"


def _draw_with_pillow(nodes, path):
    level, consumers = {}, {}
    for nid, _, inputs, _ in nodes:       # an op one row below its deepest input
        level[nid] = 1 + max((level[i] for i in inputs), default=-1)
        for i in inputs:
            consumers.setdefault(i, []).append(nid)
    for nid, _, _, leaf in nodes:         # a leaf right above the first op that reads it
        if leaf and nid in consumers:
            level[nid] = max(0, min(level[c] for c in consumers[nid]) - 1)
    rows = {}
    for node in nodes:
        rows.setdefault(level[node[0]], []).append(node)
    box_w, box_h, gap_x, gap_y = 150, 54, 24, 40
    width = max(len(r) for r in rows.values()) * (box_w + gap_x) + gap_x
    height = len(rows) * (box_h + gap_y) + gap_y
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    centre = {}
    for lv, row in rows.items():
        x0 = (width - len(row) * (box_w + gap_x) + gap_x) // 2
        for k, (nid, label, inputs, leaf) in enumerate(row):
            x, y = x0 + k * (box_w + gap_x), gap_y + lv * (box_h + gap_y)
            centre[nid] = (x + box_w // 2, y, y + box_h)
    for nid, label, inputs, leaf in nodes:
        cx, top, _ = centre[nid]
        for i in inputs:
            ix, _, bottom = centre[i]
            draw.line([(ix, bottom), (cx, top)], fill=(120, 120, 120), width=1)
            draw.polygon([(cx, top), (cx - 4, top - 8), (cx + 4, top - 8)], fill=(120, 120, 120))
    for nid, label, inputs, leaf in nodes:
        cx, top, bottom = centre[nid]
        box = [cx - box_w // 2, top, cx + box_w // 2, bottom]
        if leaf:
            draw.ellipse(box, fill=(230, 240, 255), outline=(60, 90, 160))
        else:
            draw.rectangle(box, fill=(255, 245, 225), outline=(160, 110, 40))
        for j, text in enumerate(label.split("\n")):
            draw.text((cx, top + 8 + 13 * j), text, fill="black", anchor="mt")
    img.save(path)


def draw_graph(root, path, names=None):
    """Write the graph behind tensor `root` to `path` (.png or .dot); names: {id(tensor): name}."""
    path = Path(path)
    names = names or {}
    if path.suffix == ".dot":
        path.write_text(to_dot(root, names))
        return path
    if path.suffix != ".png":
        raise ValueError(f"draw_graph: path expected a .png or .dot file, got {path}")
    dot = shutil.which("dot")
    if dot:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "graph.dot"
            source.write_text(to_dot(root, names))
            if subprocess.run([dot, "-Tpng", str(source), "-o", str(path)], capture_output=True).returncode == 0:
                return path
    _draw_with_pillow(_nodes(root, names), path)
    return path
