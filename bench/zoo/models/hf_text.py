"""Text architectures from ``transformers`` built from tiny configs in code (no download, random weights,
seed 0), exported with the TorchScript exporter (``dynamo=False``, eager attention: masks are added as
``finfo(float32).min`` constants) and cached. Text: English sentences from the standard library's docstrings
(:func:`bench.zoo._util.prose_sentences`), byte-level token ids (no tokenizer files needed). Metric: fidelity
(mean cosine to the FP32 model's outputs).

* ``bert``: BertModel, inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, ``[batch, 64]``:
  sentence pairs), outputs ``last_hidden_state`` and ``pooler_output``.
* ``gpt2``: GPT2LMHeadModel with the LM head tied to the token embedding (exported without constant folding,
  so one initializer feeds both the ``Gather`` and, through a ``Transpose``, the output ``MatMul``), int32
  ``input_ids`` and ``attention_mask`` ``[batch, 48]`` (right padding), the causal mask built in the graph;
  outputs ``logits`` and the last hidden states.
* ``t5``: T5ForConditionalGeneration (shared encoder/decoder embedding, RMSNorm as ``Pow``/``ReduceMean``/
  ``Sqrt``, relative position buckets), inputs ``input_ids``, ``attention_mask`` ``[batch, 48]`` and
  ``decoder_input_ids`` ``[batch, 24]`` (int64); output ``logits``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.zoo._util import Fidelity, byte_tokens, cached_model, prose_sentences, torch_export

RECIPE = "v1"
VOCAB = 259  # 256 bytes + pad, bos, eos


def _model(cls_name: str, cfg_name: str, **cfg: Any) -> Any:
    import torch
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(getattr(transformers, cfg_name)(**cfg)).eval()


def _spec(path: str, cal: dict, ev: dict, names: list[str], batch: int = 32) -> dict:
    return dict(model=path, calibration=cal, evaluation=ev, metric=Fidelity.of(path, ev, names, batch),
                max_drop=0.01, batch_size=batch)


# ---------------------------------------------------------------------------------------------- BERT


def _pairs(start: int, stop: int, seq: int) -> dict[str, np.ndarray]:
    s = prose_sentences(start, stop)
    firsts, seconds = s[0::2], s[1::2]
    ids = np.zeros((len(firsts), seq), np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for i, (a, b) in enumerate(zip(firsts, seconds, strict=False)):
        ta = [1, *(c + 3 for c in a.encode()[: seq // 2 - 2]), 2]
        tb = [*(c + 3 for c in b.encode()[: seq - len(ta) - 1]), 2]
        ids[i, : len(ta) + len(tb)] = ta + tb
        mask[i, : len(ta) + len(tb)] = 1
        types[i, len(ta): len(ta) + len(tb)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def build_bert(cache_dir: Path) -> dict:
    names = ["input_ids", "attention_mask", "token_type_ids"]

    def make() -> Any:
        import torch

        m = _model("BertModel", "BertConfig", vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                   num_attention_heads=4, intermediate_size=128, max_position_embeddings=128,
                   attn_implementation="eager")

        class Bert(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
                out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
                return out.last_hidden_state, out.pooler_output

        ex = _pairs(0, 4, 64)
        return torch_export(Bert(m), tuple(torch.from_numpy(ex[n]) for n in names), opset=14, input_names=names,
                            output_names=["last_hidden_state", "pooler_output"],
                            dynamic_axes={n: {0: "batch"} for n in [*names, "last_hidden_state", "pooler_output"]})

    path = cached_model(cache_dir, f"bert_{RECIPE}.onnx", make)
    return _spec(path, _pairs(0, 64, 64), _pairs(64, 192, 64), names)


# ---------------------------------------------------------------------------------------------- GPT-2


def _lm_data(start: int, stop: int, seq: int = 48) -> dict[str, np.ndarray]:
    ids, mask = byte_tokens(prose_sentences(start, stop), seq, np.int32)
    return {"input_ids": ids, "attention_mask": mask}


def build_gpt2(cache_dir: Path) -> dict:
    names = ["input_ids", "attention_mask"]

    def make() -> Any:
        import torch

        m = _model("GPT2LMHeadModel", "GPT2Config", vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4,
                   n_positions=64, tie_word_embeddings=True, use_cache=False, attn_implementation="eager")

        class LM(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN201
                out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                                 output_hidden_states=True)
                return out.logits, out.hidden_states[-1]

        ex = _lm_data(0, 2)
        return torch_export(LM(m), (torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"])),
                            opset=14, input_names=names, output_names=["logits", "hidden"],
                            dynamic_axes={n: {0: "batch"} for n in [*names, "logits", "hidden"]},
                            constant_folding=False)

    path = cached_model(cache_dir, f"gpt2_{RECIPE}.onnx", make)
    return _spec(path, _lm_data(200, 264), _lm_data(264, 392), names)


# ---------------------------------------------------------------------------------------------- T5


def _s2s_data(start: int, stop: int) -> dict[str, np.ndarray]:
    s = prose_sentences(start, stop)
    ids, mask = byte_tokens(s, 48)
    target, _ = byte_tokens([t[::-1] for t in s], 24)  # a toy target: the sentence reversed
    dec = np.zeros_like(target)
    dec[:, 1:] = target[:, :-1]  # teacher forcing: shifted right, decoder start 0
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}


def build_t5(cache_dir: Path) -> dict:
    names = ["input_ids", "attention_mask", "decoder_input_ids"]

    def make() -> Any:
        import torch

        m = _model("T5ForConditionalGeneration", "T5Config", vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128,
                   num_layers=2, num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                   decoder_start_token_id=0, pad_token_id=0, use_cache=False, attn_implementation="eager")

        class S2S(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, decoder_input_ids):  # noqa: ANN001, ANN201
                return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                  decoder_input_ids=decoder_input_ids, use_cache=False).logits

        ex = _s2s_data(0, 2)
        return torch_export(S2S(m), tuple(torch.from_numpy(ex[n]) for n in names), opset=15, input_names=names,
                            output_names=["logits"], dynamic_axes={n: {0: "batch"} for n in [*names, "logits"]})

    path = cached_model(cache_dir, f"t5_{RECIPE}.onnx", make)
    return _spec(path, _s2s_data(400, 464), _s2s_data(464, 592), names)
