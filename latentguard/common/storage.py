"""Where latentguard keeps files, and how it writes them without ever leaving half a file.

- :func:`user_cache_dir` is the one place cached weights, trained guards and critics live:
  ``$LATENTGUARD_CACHE``, else ``$XDG_CACHE_HOME/latentguard``, else ``~/.cache/latentguard``.
- :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` write to a
  temporary file in the same folder and ``os.replace`` it over the target, so a reader sees the
  old file or the new one, never a torn one (an interrupted run loses nothing already written).
- :func:`atomic_directory` does the same for a whole folder (a model cache, a checkpoint);
- :func:`read_jsonl` reads a JSON-lines file, naming the line of any row that is not JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def user_cache_dir() -> Path:
    """The folder for cached weights, guards and critics (created on demand by writers)."""
    if env := os.environ.get("LATENTGUARD_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "latentguard"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary open() would (mkstemp makes it private)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``final`` only if the block succeeds.

    An existing ``final`` is replaced (moved aside first, removed after the swap). If another
    process creates ``final`` meanwhile, its folder wins and ours is discarded.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_directory(root / "ckpt") as tmp:
    ...     _ = (tmp / "weights.bin").write_bytes(b"123")
    >>> sorted(p.name for p in (root / "ckpt").iterdir())
    ['weights.bin']
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:  # another writer got there first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_directory(final: str | os.PathLike) -> Path:
    """Undo a swap of :func:`atomic_directory` cut between its two renames: if ``final`` is missing
    and the folder moved aside is there, put it back. Returns ``final``."""
    final = Path(final)
    if not final.exists() and final.parent.exists():
        aside = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
        if aside:
            os.replace(aside[-1], final)
    return final


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` for each non-blank line of a JSON-lines file, ``where`` = ``"file:line"``;
    a line that is not JSON is a ``ValueError`` naming it.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = path.write_text('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> [(where.rsplit(":", 1)[1], row["a"]) for where, row in read_jsonl(path)]
    [('1', 1), ('3', 2)]
    """
    path = Path(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg}); one JSON object per line") from err


def slug(model_id: str) -> str:
    """A folder-safe name for a model id.

    >>> slug("HuggingFaceTB/SmolLM2-135M-Instruct")
    'HuggingFaceTB_SmolLM2-135M-Instruct'
    """
    return re.sub(r"[^\w.-]+", "_", model_id).strip("_")[-80:]


def cached_or_shipped(cached: Path, shipped: Path, marker: str) -> Path:
    """Where a trained artefact is read from by default: the user cache's folder if it holds
    ``marker`` (your own training run), else the folder shipped in the package if it does, else the
    cache's (so the error names where to build it)."""
    if (cached / marker).is_file() or not (shipped / marker).is_file():
        return cached
    return shipped


def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Make sure ``path`` is (or can become) a folder this process can write, before a run writes
    anything there; an error names the value and the fix. Creates the folder (empty) if needed."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {str(out)!r} is a file, not a folder; give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"cannot write to {option} {str(out)!r} ({err.strerror or err}); give a folder you can write "
                         "to") from err
    return out


def read_json_file(path: str | os.PathLike, what: str, fix: str) -> Any:
    """The JSON in ``path``; a file that does not parse is an error naming it, ``what`` it is and the ``fix``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the {what} {str(path)!r}: not valid JSON ({err}); {fix}") from err


def read_safetensors(path: str | os.PathLike, what: str, fix: str) -> dict:
    """The tensors in ``path`` (on the CPU); a damaged file is an error naming it, ``what`` it is and the ``fix``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read the {what} {str(path)!r} ({err}): it is not a safetensors file or it is "
                         f"damaged; {fix}") from err
