"""Vision architectures from ``transformers`` built from tiny configs in code (no download), exported with the
TorchScript exporter (``dynamo=False``) and cached. Random weights (seed 0) with a fidelity metric (mean
cosine of the logits to the FP32 model's, :class:`bench.zoo._util.Fidelity`), except ResNet, trained here for
a few seconds on scikit-learn's digits and scored by top-1.

Data: rendered images (:func:`bench.zoo._util.natural_images`: gradients, shapes, text, blur, noise), ImageNet
normalisation; 32 calibration and 64 evaluation images (seeds 1 and 2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.zoo._util import Fidelity, cached_model, imagenet_normalize, natural_images, torch_export

RECIPE = "v1"


def _images(n: int, size: int, seed: int) -> np.ndarray:
    return imagenet_normalize(natural_images(n, size, size, seed))


def _export_classifier(model: Any, size: int, opset: int, dynamic: bool = True) -> Any:
    import torch

    class Logits(torch.nn.Module):  # the HF output object -> a plain tensor
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.inner(pixel_values=pixel_values).logits

    axes = {"pixel_values": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    return torch_export(Logits(model.eval()), (torch.zeros(2, 3, size, size),), opset=opset,
                        input_names=["pixel_values"], output_names=["logits"], dynamic_axes=axes)


def _fidelity_spec(path: str, size: int, batch: int = 32) -> dict:
    cal, ev = _images(32, size, 1), _images(64, size, 2)
    metric = Fidelity.of(path, {"pixel_values": ev}, ["pixel_values"], batch)
    return dict(model=path, calibration={"pixel_values": cal}, evaluation={"pixel_values": ev}, metric=metric,
                max_drop=0.01, batch_size=batch)


def _random(cls_name: str, cfg_name: str, **cfg: Any) -> Any:
    import torch
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    config = getattr(transformers, cfg_name)(**cfg)
    return getattr(transformers, cls_name)(config).eval()


def build_vit(cache_dir: Path) -> dict:
    def make() -> Any:
        m = _random("ViTForImageClassification", "ViTConfig", hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=4, num_labels=10,
                    attn_implementation="eager")
        return _export_classifier(m, 32, 14)

    return _fidelity_spec(cached_model(cache_dir, f"vit_{RECIPE}.onnx", make), 32)


def build_swin(cache_dir: Path) -> dict:
    def make() -> Any:
        m = _random("SwinForImageClassification", "SwinConfig", image_size=32, patch_size=2, embed_dim=16,
                    depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=10, attn_implementation="eager")
        return _export_classifier(m, 32, 17)

    return _fidelity_spec(cached_model(cache_dir, f"swin_{RECIPE}.onnx", make), 32)


def build_convnext(cache_dir: Path) -> dict:
    def make() -> Any:
        m = _random("ConvNextForImageClassification", "ConvNextConfig", patch_size=4, num_stages=3, hidden_sizes=[16, 32, 64],
                    depths=[1, 2, 1], num_labels=10, image_size=32)
        return _export_classifier(m, 32, 19)

    return _fidelity_spec(cached_model(cache_dir, f"convnext_{RECIPE}.onnx", make), 32)


def build_mobilevit(cache_dir: Path) -> dict:
    def make() -> Any:
        m = _random("MobileViTForImageClassification", "MobileViTConfig", image_size=64, patch_size=2,
                    hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                    num_attention_heads=2, expand_ratio=2.0, num_labels=10)
        return _export_classifier(m, 64, 20)

    return _fidelity_spec(cached_model(cache_dir, f"mobilevit_{RECIPE}.onnx", make), 64)


def build_efficientnet(cache_dir: Path) -> dict:
    def make() -> Any:
        m = _random("EfficientNetForImageClassification", "EfficientNetConfig", image_size=64,
                    width_coefficient=0.25, depth_coefficient=0.3, hidden_dim=320, num_labels=10)
        return _export_classifier(m, 64, 13)

    return _fidelity_spec(cached_model(cache_dir, f"efficientnet_{RECIPE}.onnx", make), 64)


def build_segformer(cache_dir: Path) -> dict:
    def make() -> Any:
        import torch

        m = _random("SegformerForSemanticSegmentation", "SegformerConfig", num_encoder_blocks=2, depths=[1, 1],
                    sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                    num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=5)

        class Seg(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                return self.inner(pixel_values=pixel_values).logits

        return torch_export(Seg(m), (torch.zeros(2, 3, 64, 64),), opset=14, input_names=["pixel_values"],
                            output_names=["logits"],
                            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})

    return _fidelity_spec(cached_model(cache_dir, f"segformer_{RECIPE}.onnx", make), 64)


# ---------------------------------------------------------------------------------------------- ResNet


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as 32x32 three-channel images in [-1, 1], and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((4, 4)))[:, None].repeat(3, axis=1)
    return (x * 2 - 1).astype(np.float32), d.target.astype(np.int64)


def build_resnet(cache_dir: Path) -> dict:
    x, y = _digits()
    order = np.random.default_rng(0).permutation(len(x))
    train, cal, ev = order[:1200], order[1200:1328], order[1400:1700]

    def make() -> Any:
        import torch

        m = _random("ResNetForImageClassification", "ResNetConfig", embedding_size=16, hidden_sizes=[16, 32, 64],
                    depths=[1, 1, 1], layer_type="basic", num_labels=10, downsample_in_first_stage=False)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            opt = torch.optim.Adam(m.parameters(), lr=3e-3)
            g = torch.Generator().manual_seed(0)
            xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
            m.train()
            for _ in range(3):
                for idx in torch.randperm(len(xt), generator=g).split(64):
                    opt.zero_grad()
                    loss = torch.nn.functional.cross_entropy(m(pixel_values=xt[idx]).logits, yt[idx])
                    loss.backward()
                    opt.step()
        finally:
            torch.set_num_threads(threads)
        return _export_classifier(m.eval(), 32, 11)

    path = cached_model(cache_dir, f"resnet_digits_{RECIPE}.onnx", make)
    return dict(model=path, calibration={"pixel_values": x[cal]}, evaluation={"pixel_values": x[ev], "labels": y[ev]},
                metric="top1", max_drop=0.01, batch_size=100)
