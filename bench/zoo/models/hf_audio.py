"""Audio encoders: ``transformers`` wav2vec2 and Whisper from tiny configs (no download, random weights, seed
0), exported with the TorchScript exporter (``dynamo=False``) and cached. Data: 1 s clips of synthetic
speech-like audio at 16 kHz (:func:`bench.zoo._util.speech_like`). Metric: fidelity (mean cosine to the FP32
model's outputs).

* ``wav2vec2``: Wav2Vec2Model on the raw waveform ``input_values`` ``[batch, 16000]``: the convolutional
  feature encoder (GroupNorm), the convolutional relative position embedding (weight norm), two transformer
  layers; output ``last_hidden_state`` ``[batch, 49, 64]``.
* ``whisper_stft``: the log-mel front end inside the graph, then a Whisper encoder: ``STFT`` (opset 17, Hann
  window, reflect padding), power as ``Pow``, a 40-band mel filter bank ``MatMul``, ``Log`` / ln(10), the
  clamp to (max - 8) and ``(x + 4) / 4`` of Whisper's feature extractor; input ``audio`` ``[batch, 16000]``,
  output ``last_hidden_state`` ``[batch, 50, 64]``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.zoo._util import Fidelity, cached_model, speech_like, torch_export

RECIPE = "v1"
SR = 16000


def _spec(path: str, name: str) -> dict:
    cal, _ = speech_like(16, SR, SR, 1)
    ev, _ = speech_like(32, SR, SR, 2)
    return dict(model=path, calibration={name: cal}, evaluation={name: ev},
                metric=Fidelity.of(path, {name: ev}, [name], 16), max_drop=0.01, batch_size=16)


def build_wav2vec2(cache_dir: Path) -> dict:
    def make() -> Any:
        import torch
        import transformers

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.manual_seed(0)
        cfg = transformers.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=128, conv_dim=(32, 32, 32, 32), conv_stride=(5, 4, 4, 4),
                                          conv_kernel=(10, 8, 8, 8), num_conv_pos_embeddings=16,
                                          num_conv_pos_embedding_groups=4, feat_extract_norm="group",
                                          attn_implementation="eager")
        m = transformers.Wav2Vec2Model(cfg).eval()

        class W2V(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_values):  # noqa: ANN001, ANN201
                return self.inner(input_values=input_values).last_hidden_state

        return torch_export(W2V(m), (torch.zeros(2, SR),), opset=14, input_names=["input_values"],
                            output_names=["last_hidden_state"],
                            dynamic_axes={"input_values": {0: "batch"}, "last_hidden_state": {0: "batch"}})

    return _spec(cached_model(cache_dir, f"wav2vec2_{RECIPE}.onnx", make), "input_values")


def mel_filters(n_mels: int, n_fft: int, sr: int) -> np.ndarray:
    """Triangular mel filters ``[n_fft // 2 + 1, n_mels]`` (HTK mel scale), area-normalised."""
    def hz2mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel2hz(np.linspace(hz2mel(np.array(0.0)), hz2mel(np.array(sr / 2)), n_mels + 2))
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        fb[:, i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
        fb[:, i] *= 2.0 / (hi - lo)
    return fb.astype(np.float32)


def build_whisper(cache_dir: Path) -> dict:
    n_fft, hop, n_mels, positions = 400, 160, 40, 50

    def make() -> Any:
        import torch
        import transformers

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.manual_seed(0)
        cfg = transformers.WhisperConfig(num_mel_bins=n_mels, d_model=64, encoder_layers=2, encoder_attention_heads=4,
                                         encoder_ffn_dim=128, decoder_layers=1, decoder_attention_heads=4,
                                         decoder_ffn_dim=128, max_source_positions=positions, vocab_size=100, pad_token_id=0,
                                         bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                         attn_implementation="eager")
        encoder = transformers.WhisperModel(cfg).get_encoder().eval()

        class LogMelWhisper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder
                self.register_buffer("window", torch.hann_window(n_fft))
                self.register_buffer("fb", torch.from_numpy(mel_filters(n_mels, n_fft, SR)))

            def forward(self, audio):  # noqa: ANN001, ANN201
                spec = torch.stft(audio, n_fft, hop, window=self.window, center=True, return_complex=False)
                power = spec[..., 0].pow(2) + spec[..., 1].pow(2)  # [batch, freqs, frames]
                mel = torch.matmul(power[..., : 2 * positions].transpose(1, 2), self.fb)  # [batch, frames, mels]
                logmel = torch.log(torch.clamp(mel, min=1e-10)) / math.log(10.0)
                peak = logmel.amax(dim=(1, 2), keepdim=True)
                logmel = (torch.maximum(logmel, peak - 8.0) + 4.0) / 4.0
                return self.encoder(input_features=logmel.transpose(1, 2)).last_hidden_state

        return torch_export(LogMelWhisper().eval(), (torch.zeros(2, SR),), opset=17, input_names=["audio"],
                            output_names=["last_hidden_state"],
                            dynamic_axes={"audio": {0: "batch"}, "last_hidden_state": {0: "batch"}})

    return _spec(cached_model(cache_dir, f"whisper_stft_{RECIPE}.onnx", make), "audio")
