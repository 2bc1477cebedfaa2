"""Models written here in PyTorch and exported with the TorchScript exporter (``dynamo=False``), cached:

* ``unet``: a small UNet (Conv/BatchNorm/ReLU, MaxPool down, ``ConvTranspose`` up, skip ``Concat``), trained
  for a few seconds to segment the circles (not the rectangles) of rendered 32 x 32 scenes; dynamic batch,
  height and width; metric: IoU of ``logit > 0`` with the true circle mask. Opset 12.
* ``lstm_text``: byte embedding + 2-layer bidirectional ``LSTM`` + masked mean + Linear, trained for a few
  seconds to tell English prose (standard-library docstrings) from Python code lines (standard-library
  sources); int64 ``tokens`` ``[batch, 48]``; metric: top-1. Opset 9.
* ``loop_if``: a TorchScript-scripted iterative refiner: a ``Loop`` whose trip count is the int64 scalar input
  ``steps``, then an ``If`` on a data-dependent condition; random weights; metric: fidelity. Opset 11.
* ``attn_overflow``: a transformer encoder written by hand the way that breaks low precision: the padding
  mask filled with ``-inf``, softmax as ``Exp`` / ``ReduceSum`` / ``Div`` without subtracting the maximum
  (scores reach ~20: exp overflows float16), LayerNorm from ``Pow``/``Sqrt``/``Div``, tanh-GELU with
  ``Pow(x, 3)``; int64 ``input_ids`` and ``attention_mask``; outputs per-token states and a masked-mean
  embedding; random weights (scaled up); metric: fidelity. Opset 18.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

from bench.zoo._util import Fidelity, byte_tokens, cached_model, prose_sentences, torch_export

RECIPE = "v1"
SCORE_SCALE, FF_SCALE = 3.0, 24.0  # attn_overflow: softmax inputs up to ~20, FFN pre-activations up to ~60


def _one_thread(fn):  # noqa: ANN001, ANN202 - decorator: train on one thread, deterministically
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.manual_seed(0)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapped


# ---------------------------------------------------------------------------------------------- UNet


def shapes(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Grey scenes ``[n, 1, size, size]`` of circles and rectangles, and the circle masks ``[n, size, size]``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, size, size), np.float32)
    y = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        img = Image.new("L", (size, size), int(rng.integers(0, 80)))
        mask = Image.new("L", (size, size), 0)
        d, dm = ImageDraw.Draw(img), ImageDraw.Draw(mask)
        for _ in range(int(rng.integers(2, 5))):
            cx, r = rng.uniform(0, size, 2), rng.uniform(3, 8)
            box = [cx[0] - r, cx[1] - r, cx[0] + r, cx[1] + r]
            shade = int(rng.integers(120, 256))
            if rng.random() < 0.5:
                d.ellipse(box, fill=shade)
                dm.ellipse(box, fill=1)
            else:
                d.rectangle(box, fill=shade)
                dm.rectangle(box, fill=0)
        x[i, 0] = np.asarray(img, np.float32) / 255.0 + rng.normal(0, 0.05, (size, size))
        y[i] = np.asarray(mask)
    return x, y


def _unet() -> Any:
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e1, self.e2, self.mid = block(1, 8), block(8, 16), block(16, 32)
            self.u2, self.d2 = nn.ConvTranspose2d(32, 16, 2, stride=2), block(32, 16)
            self.u1, self.d1 = nn.ConvTranspose2d(16, 8, 2, stride=2), block(16, 8)
            self.out = nn.Conv2d(8, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.e1(x)
            e2 = self.e2(nn.functional.max_pool2d(e1, 2))
            m = self.mid(nn.functional.max_pool2d(e2, 2))
            d2 = self.d2(torch.cat([self.u2(m), e2], 1))
            d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
            return self.out(d1)

    return UNet()


def mask_iou(run, data: dict) -> float:  # noqa: ANN001
    inter = union = 0
    for s in range(0, len(data["image"]), 64):
        pred = np.asarray(run({"image": data["image"][s:s + 64]})[0])[:, 0] > 0
        truth = data["mask"][s:s + 64].astype(bool)
        inter += int(np.sum(pred & truth))
        union += int(np.sum(pred | truth))
    return inter / union if union else 1.0


def build_unet(cache_dir: Path) -> dict:
    @_one_thread
    def make() -> Any:
        import torch

        net = _unet()
        x, y = shapes(1024, 0)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y[:, None].astype(np.float32))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        net.train()
        for _ in range(4):
            for idx in torch.randperm(len(xt), generator=g).split(32):
                opt.zero_grad()
                torch.nn.functional.binary_cross_entropy_with_logits(net(xt[idx]), yt[idx]).backward()
                opt.step()
        return torch_export(net.eval(), (torch.zeros(2, 1, 32, 32),), opset=10, input_names=["image"],
                            output_names=["logits"], dynamic_axes={"image": {0: "batch", 2: "h", 3: "w"},
                                                                   "logits": {0: "batch", 2: "h", 3: "w"}})

    path = cached_model(cache_dir, f"unet_{RECIPE}.onnx", make)
    cx, _ = shapes(64, 1)
    ex, ey = shapes(256, 2)
    return dict(model=path, calibration={"image": cx}, evaluation={"image": ex, "mask": ey}, metric=mask_iou,
                max_drop=0.01, batch_size=64)


# ---------------------------------------------------------------------------------------------- LSTM


def code_lines(n: int) -> list[str]:
    """``n`` Python code lines (20-48 characters, no strings or comments) of standard-library modules."""
    from sweeper.examples import minilm

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    for rel in minilm._STDLIB_SOURCES:  # noqa: SLF001
        path = stdlib / rel
        if not path.is_file():
            continue
        source = path.read_text(encoding="utf-8")
        doc_lines: set[int] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                doc_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        for i, line in enumerate(source.splitlines(), 1):
            s = line.strip()
            if i not in doc_lines and 20 <= len(s) <= 48 and not s.startswith("#") and any(c in s for c in "=(."):
                seen.add(s)
    lines = sorted(seen, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    return lines[:n]


def _text_data(start: int, n: int) -> dict[str, np.ndarray]:
    prose = [s[:48] for s in prose_sentences(start, start + n // 2)]
    code = code_lines(start + n // 2)[start:]
    texts, labels = [], []
    for p, c in zip(prose, code, strict=False):
        texts += [p, c]
        labels += [0, 1]
    ids, _ = byte_tokens(texts, 48)
    return {"tokens": ids, "labels": np.asarray(labels, np.int64)}


def build_lstm(cache_dir: Path) -> dict:
    @_one_thread
    def make() -> Any:
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = nn.Embedding(259, 16)
                self.lstm = nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
                self.head = nn.Linear(64, 2)

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                mask = (tokens > 0).unsqueeze(-1).float()
                h, _ = self.lstm(self.emb(tokens))
                return self.head((h * mask).sum(1) / mask.sum(1).clamp(min=1.0))

        net = Net()
        d = _text_data(0, 600)
        xt, yt = torch.from_numpy(d["tokens"]), torch.from_numpy(d["labels"])
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            for idx in torch.randperm(len(xt), generator=g).split(32):
                opt.zero_grad()
                nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                opt.step()
        return torch_export(net.eval(), (torch.from_numpy(d["tokens"][:2]),), opset=9, input_names=["tokens"],
                            output_names=["logits"], dynamic_axes={"tokens": {0: "batch"}, "logits": {0: "batch"}})

    path = cached_model(cache_dir, f"lstm_text_{RECIPE}.onnx", make)
    cal, ev = _text_data(300, 128), _text_data(400, 256)
    return dict(model=path, calibration={"tokens": cal["tokens"]}, evaluation=ev, metric="top1", max_drop=0.01,
                batch_size=64)


# ---------------------------------------------------------------------------------------------- Loop / If


def build_loop_if(cache_dir: Path) -> dict:
    @_one_thread
    def make() -> Any:
        import torch
        from torch import nn

        class Refiner(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inp = nn.Linear(16, 32)
                self.step = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 32))
                self.head = nn.Linear(32, 4)

            def forward(self, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
                h = self.inp(x)
                for _ in range(int(steps)):
                    h = h + 0.5 * self.step(h)
                if bool(h.abs().mean() > 1.0):
                    h = h / h.abs().mean()
                else:
                    h = torch.relu(h) * 2.0
                return self.head(h)

        scripted = torch.jit.script(Refiner().eval())
        return torch_export(scripted, (torch.zeros(2, 16), torch.tensor(3)), opset=11, input_names=["x", "steps"],
                            output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})

    path = cached_model(cache_dir, f"loop_if_{RECIPE}.onnx", make)
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 2, (4, 16))
    cal = (centres[rng.integers(0, 4, 64)] + rng.normal(0, 0.5, (64, 16))).astype(np.float32)
    ev = (centres[rng.integers(0, 4, 128)] + rng.normal(0, 0.5, (128, 16))).astype(np.float32)
    steps = np.array(3, np.int64)
    return dict(model=path, calibration={"x": cal, "steps": steps}, evaluation={"x": ev, "steps": steps},
                metric=Fidelity.of(path, {"x": ev, "steps": steps}, ["x", "steps"], 32), max_drop=0.01,
                batch_size=32)


# ---------------------------------------------------------------------------------------------- overflow


def build_attn_overflow(cache_dir: Path) -> dict:
    names = ["input_ids", "attention_mask"]

    @_one_thread
    def make() -> Any:
        import torch
        from torch import nn

        d = 64

        class Layer(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
                self.f1, self.f2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
                self.g1, self.b1 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))
                self.g2, self.b2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))
                with torch.no_grad():
                    self.q.weight.mul_(SCORE_SCALE)
                    self.k.weight.mul_(SCORE_SCALE)
                    self.f1.weight.mul_(FF_SCALE)

            @staticmethod
            def norm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                mu = x.mean(-1, keepdim=True)
                var = (x - mu).pow(2).mean(-1, keepdim=True)
                return (x - mu) / torch.sqrt(var + 1e-5) * g + b

            def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                scores = self.q(x) @ self.k(x).transpose(1, 2) / 8.0
                scores = scores.masked_fill(mask[:, None, :] == 0, float("-inf"))
                e = torch.exp(scores)
                x = self.norm(x + self.o((e / e.sum(-1, keepdim=True)) @ self.v(x)), self.g1, self.b1)
                h = self.f1(x)
                h = 0.5 * h * (1.0 + torch.tanh(0.7978845608 * (h + 0.044715 * h.pow(3))))
                return self.norm(x + self.f2(h), self.g2, self.b2)

        class Encoder(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = nn.Embedding(259, d)
                self.pos = nn.Parameter(torch.randn(48, d) * 0.5)
                self.layers = nn.ModuleList([Layer(), Layer()])

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):  # noqa: ANN201
                x = self.emb(input_ids) + self.pos
                for layer in self.layers:
                    x = layer(x, attention_mask)
                m = attention_mask.unsqueeze(-1).float()
                return x, (x * m).sum(1) / m.sum(1)

        ids, mask = byte_tokens(prose_sentences(0, 2), 48)
        return torch_export(Encoder().eval(), (torch.from_numpy(ids), torch.from_numpy(mask)), opset=18,
                            input_names=names, output_names=["states", "embedding"],
                            dynamic_axes={n: {0: "batch"} for n in [*names, "states", "embedding"]})

    path = cached_model(cache_dir, f"attn_overflow_{RECIPE}.onnx", make)

    def data(a: int, b: int) -> dict[str, np.ndarray]:
        ids, mask = byte_tokens(prose_sentences(a, b), 48)
        return {"input_ids": ids, "attention_mask": mask}

    cal, ev = data(600, 664), data(664, 792)
    return dict(model=path, calibration=cal, evaluation=ev, metric=Fidelity.of(path, ev, names, 32),
                max_drop=0.01, batch_size=32)
