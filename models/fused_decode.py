"""The policy's decoding step as one C++ call (`models/csrc/decode_step.cpp`), built on first use.

At one new token per row, the eager step of `GPT.decode` launches ~100 small operators
from Python and runs the attention over the KV cache as 256 tiny matrix products per
layer. The C++ step keeps the linears on the kernels the eager step uses (sgemm, or oneDNN
where `models/kernels.py` picks it), attends with a plain loop per row and head, and does
not return to Python between layers (bench/README has the A/B).
It is compiled once per machine and source text with PyTorch's `cpp_extension` (a C++
compiler and `ninja`, a dependency; ~25 s) into PyTorch's extension cache; where it cannot be built,
sampling warns once and stays on the eager step, which remains the reference the tests
hold the fused one to. `TOKENMDP_FUSED_DECODE=0` turns it off; `with fused(False):`
switches within a block (benchmarks and tests compare both in one run).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).parent / "csrc" / "decode_step.cpp"
FLAGS = ["-O3", "-fopenmp-simd"]


def wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether the fused step may be used: unless `TOKENMDP_FUSED_DECODE` is 0, false, off or no."""
    value = (environ if environ is not None else os.environ).get("TOKENMDP_FUSED_DECODE", "1")
    return value.strip().lower() not in ("0", "false", "off", "no")


_enabled = wanted()


@cache
def load() -> ModuleType | None:
    """The compiled extension, or None (with one warning saying why) where it cannot be built."""
    try:
        from torch.utils.cpp_extension import load_inline

        _put_ninja_on_path()
        source = SOURCE.read_text()
        name = extension_name(source, torch.backends.cpu.get_cpu_capability())
        _say_if_building(name)
        # Built from the text, in a directory of its own name: the same source in any checkout is one build.
        return load_inline(name=name, cpp_sources=[source], extra_cflags=FLAGS, verbose=False)
    except Exception as error:  # no compiler, no ninja, a failed build: the eager step still works
        warnings.warn(f"fused decoding step unavailable, sampling on the eager step: {error}", stacklevel=2)
        return None


def extension_name(source: str, capability: str) -> str:
    """One build per source text, flags and CPU class (PyTorch's extension cache outlives a session's
    machine, and two checkouts of different versions share it)."""
    digest = hashlib.sha256("\n".join([source, *FLAGS]).encode()).hexdigest()[:12]
    return f"tokenmdp_decode_step_{capability.lower()}_{digest}"


def _say_if_building(name: str) -> None:
    """A first use compiles for ~25 s: say so, rather than leave a silent pause."""
    from torch.utils.cpp_extension import _get_build_directory

    if not (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").is_file():
        print(f"tokenmdp: compiling the fused decoding step for this machine, once (~25 s): {name}", file=sys.stderr)


def _put_ninja_on_path() -> None:
    """PyTorch runs `ninja` from PATH; the `ninja` package's binary sits in the venv, which a
    `.venv/bin/python` started without activating it does not have on PATH."""
    if shutil.which("ninja") is None:
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def active() -> ModuleType | None:
    """The extension when the fused step is on and could be built, else None."""
    return load() if _enabled else None


@contextmanager
def fused(enabled: bool) -> Iterator[None]:
    """Within the block, decoding steps run fused (True, where it could be built) or eager."""
    global _enabled
    old, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = old
