"""The policy's decoding step as one C++ call (`models/csrc/decode_step.cpp`), built on first use.

At one new token per row, the eager step of `GPT.decode` launches ~100 small operators
from Python and runs the attention over the KV cache as 256 tiny matrix products per
layer. The C++ step keeps the linears on the kernels the eager step uses (sgemm, or oneDNN
where `models/kernels.py` picks it), attends with a plain loop per row and head, and does
not return to Python between layers (bench/README has the A/B). float32 and bfloat16 policies (a
bfloat16 sampler's) take it; the attention sums in float32 either way. The same extension runs
`generate`'s loop after the prompt (`sample`: choosing each action and the bookkeeping around the
steps, with the operators the Python loop calls), 1.4x faster at one row, 1.05x at 64.
It is compiled once per machine and source text with PyTorch's `cpp_extension` (a C++
compiler and `ninja`, a dependency; ~25 s) into PyTorch's extension cache; where it cannot be built,
sampling warns once and stays on the eager step, which remains the reference the tests
hold the fused one to. `TOKENMDP_FUSED_DECODE=0` turns it off; `with fused(False):`
switches within a block (benchmarks and tests compare both in one run).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).parent / "csrc" / "decode_step.cpp"


@dataclass(frozen=True)
class Flags:
    """One way to build the extension: its compiler and linker flags (part of the build's name), and what
    `status` says of a build made so."""

    compile: tuple[str, ...]
    link: tuple[str, ...]
    built: str = "built"


# OpenMP, as PyTorch itself is built: ATen's `parallel_for`, which splits the attention loop's rows
# and heads across torch's threads, is an inline `#pragma omp parallel` that a build without it runs
# on one thread whatever `torch.set_num_threads` says (the step at 2 threads: attention no faster than
# at 1, bench/README). The extension then takes the libgomp PyTorch has already loaded. A compiler
# without OpenMP (Apple's clang) builds the second way: the same step, its loop on one thread.
THREADED = Flags(("-O3", "-fopenmp"), ("-fopenmp",))
ONE_THREAD = Flags(("-O3", "-fopenmp-simd"), (), "built without OpenMP (its attention on one thread)")
BUILDS = (THREADED, ONE_THREAD)


def wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether the fused step may be used: unless `TOKENMDP_FUSED_DECODE` is 0, false, off or no."""
    value = (environ if environ is not None else os.environ).get("TOKENMDP_FUSED_DECODE", "1")
    return value.strip().lower() not in ("0", "false", "off", "no")


_enabled = wanted()


@cache
def load() -> ModuleType | None:
    """The compiled extension, or None (with one warning saying why) where it cannot be built."""
    failures: list[Exception] = []
    for flags in BUILDS:
        try:
            module = build(this_extension_name(flags), SOURCE.read_text(), flags)
        except Exception as error:  # no compiler, no ninja, a failed build: the eager step still works
            failures.append(error)
            continue
        if failures:
            warnings.warn(f"fused decoding step built without OpenMP, its attention on one thread: {failures[0]}",
                          stacklevel=2)  # fmt: skip
        return module
    warnings.warn(f"fused decoding step unavailable, sampling on the eager step: {failures[0]}", stacklevel=2)
    return None


def build(name: str, source: str, flags: Flags = THREADED) -> ModuleType:
    """Compile `source` as the extension `name` in PyTorch's extension cache, or load it if built.

    PyTorch guards a build with a lock file it deletes when done; a build killed midway (a
    run stopped while it compiles) leaves that file behind, and every later build of the same
    name then waits for it forever. So builders here first take an OS lock, which the kernel
    drops when its holder dies: whoever holds it is the only builder, and a PyTorch lock file
    found then is stale and goes."""
    from torch.utils.cpp_extension import _get_build_directory
    from torch.utils.cpp_extension import load as compile_and_load

    _put_ninja_on_path()
    directory = Path(_get_build_directory(name, verbose=False))
    with open(directory / "tokenmdp.flock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)
        _say_if_building(directory, name)
        path = directory / f"{name}.cpp"
        if not path.is_file() or path.read_text() != source:
            path.write_text(source)
        return compile_and_load(
            name=name, sources=[str(path)], extra_cflags=list(flags.compile), extra_ldflags=list(flags.link),
            build_directory=str(directory),
        )  # fmt: skip


def extension_name(source: str, capability: str, torch_dir: str, flags: Flags = THREADED) -> str:
    """One build per source text, flags, CPU class and PyTorch install: the extension cache outlives a
    session's machine and is shared by every checkout, and two virtual environments compiling into one
    build directory (its build file names each one's headers) rebuilt it in turn, ~25 s at each switch."""
    digest = hashlib.sha256("\n".join([source, *flags.compile, *flags.link, torch_dir]).encode()).hexdigest()[:12]
    return f"tokenmdp_decode_step_{capability.lower()}_{digest}"


def this_extension_name(flags: Flags = THREADED) -> str:
    """The name of the build of this source with `flags` for this CPU class and PyTorch install."""
    capability, torch_dir = torch.backends.cpu.get_cpu_capability(), str(Path(torch.__file__).parent)
    return extension_name(SOURCE.read_text(), capability, torch_dir, flags)


def _say_if_building(directory: Path, name: str) -> None:
    """A first use compiles for ~25 s: say so, rather than leave a silent pause."""
    if not (directory / f"{name}.so").is_file():
        print(f"tokenmdp: compiling the fused decoding step for this machine, once (~25 s): {name}", file=sys.stderr)


def _put_ninja_on_path() -> None:
    """PyTorch runs `ninja` from PATH; the `ninja` package's binary sits in the venv, which a
    `.venv/bin/python` started without activating it does not have on PATH."""
    if shutil.which("ninja") is None:
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def status() -> str:
    """Whether sampling here runs the fused step, without building it: for `tokenmdp --version`."""
    if not _enabled:
        return "off (TOKENMDP_FUSED_DECODE=0)"
    from torch.utils.cpp_extension import _get_build_directory

    for flags in BUILDS:
        name = this_extension_name(flags)
        directory = Path(_get_build_directory(name, verbose=False))  # PyTorch makes the folder if it is not there
        if (directory / f"{name}.so").is_file():
            return f"on, {flags.built}"
        if not any(directory.iterdir()):
            directory.rmdir()  # asking leaves nothing behind
    return "on, compiled at the first sampling (~25 s)"


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
