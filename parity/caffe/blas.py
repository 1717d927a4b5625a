"""The BLAS under real Caffe: which kernels it runs, pinned before it loads, and the record of them.

OpenBLAS chooses its kernels (sgemm, sgemv, sasum, ...) by the CPU it finds when it loads, and each
kernel adds float32 products in its own order: one Caffe build gives sums that differ in the last bits
(up to 2e-2 on a deep net) from one CPU to the next. `parity dump` therefore names the kernel
(OPENBLAS_CORETYPE) and one thread (OPENBLAS_NUM_THREADS) before pycaffe loads OpenBLAS, checks after
the import that OpenBLAS runs exactly that, and writes what it found into every manifest.

Nothing here imports numpy, TensorFlow or pycaffe; the library is read through ctypes.
"""
from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ParityError

CPUINFO = Path("/proc/cpuinfo")
DEFAULT_CORE = "Haswell"  # AVX2 + FMA: every x86-64 CPU since 2013-2015 runs it, so references reproduce there
AUTO = "auto"  # no pinning: OpenBLAS picks by CPU (the result then depends on the machine)

# OPENBLAS_CORETYPE names parity pins, spelled as openblas_get_corename() reports them, with the
# /proc/cpuinfo flags their kernels need (a kernel the CPU lacks would die of SIGILL, not of an error).
KERNELS: dict[str, tuple[str, ...]] = {
    "Prescott": ("pni",),  # pni is how Linux spells SSE3
    "Core2": ("ssse3",),
    "Penryn": ("sse4_1",),
    "Nehalem": ("sse4_2",),
    "Sandybridge": ("avx",),
    "Haswell": ("avx2", "fma"),
    "Zen": ("avx2", "fma"),
    "SkylakeX": ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"),
    "Cooperlake": ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"),
}


@dataclass(frozen=True)
class Pin:
    """The kernel to run (a KERNELS name, or AUTO) and what chose it: "--blas-core", "OPENBLAS_CORETYPE"
    (the environment) or "default"."""

    core: str
    chosen_by: str


def cpu_flags(path: Path | None = None) -> set[str] | None:
    """The CPU's feature flags as Linux lists them, or None where there are none to read (not Linux,
    not x86)."""
    path = path or CPUINFO
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else None


def choose_core(option: str | None, environ=None, cpuinfo: Path | None = None) -> Pin:
    """The kernel `parity dump` pins: --blas-core if given, else OPENBLAS_CORETYPE from the environment,
    else Haswell; refused as one line when it is no name parity knows or the CPU cannot run it."""
    environ = os.environ if environ is None else environ
    if option is not None:
        name, chosen_by, what = option, "--blas-core", f"--blas-core {option!r}"
    elif environ.get("OPENBLAS_CORETYPE"):
        name = environ["OPENBLAS_CORETYPE"]
        chosen_by, what = "OPENBLAS_CORETYPE", f"OPENBLAS_CORETYPE={name!r} (from the environment)"
    else:
        name, chosen_by, what = DEFAULT_CORE, "default", f"the default kernel {DEFAULT_CORE}"
    if name.strip().lower() == AUTO:
        return Pin(AUTO, chosen_by)
    core = next((k for k in KERNELS if k.lower() == name.strip().lower()), None)
    if core is None:
        raise ParityError(f"{what} is not a BLAS kernel parity dump can pin; choose one of "
                          f"{', '.join(KERNELS)} or {AUTO}")
    flags = cpu_flags(cpuinfo)
    where = cpuinfo or CPUINFO
    if flags is None:
        raise ParityError(f"cannot tell whether this CPU runs OpenBLAS's {core} kernels (no x86 flags to read); "
                          f"pass --blas-core {AUTO} to let OpenBLAS choose (the blobs then depend on this CPU)", where)
    missing = [flag for flag in KERNELS[core] if flag not in flags]
    if missing:
        runnable = [k for k in KERNELS if all(flag in flags for flag in KERNELS[k])]
        raise ParityError(f"this CPU cannot run OpenBLAS's {core} kernels ({what}): its flags lack "
                          f"{', '.join(missing)}; it runs {', '.join(runnable) or 'none of them'} "
                          f"(or --blas-core {AUTO})", where)
    return Pin(core, chosen_by)


def pin(choice: Pin, environ=None) -> None:
    """Set the environment OpenBLAS reads once, when it loads: the kernel and a single thread."""
    environ = os.environ if environ is None else environ
    if choice.core == AUTO:
        environ.pop("OPENBLAS_CORETYPE", None)
    else:
        environ["OPENBLAS_CORETYPE"] = choice.core
    environ["OPENBLAS_NUM_THREADS"] = "1"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def blas_library(module: str | Path | None) -> str | None:
    """The file of the BLAS the extension `module` (pycaffe's _caffe.so) calls: its cblas_sgemm looked up
    from the module's own handle (which searches the libraries it was linked with) and traced back to
    its file with dladdr. Other BLAS copies in the process (numpy's and scipy's own OpenBLAS) are not it."""
    if module is None:
        return _mapped_openblas()
    try:
        sgemm = ctypes.cast(ctypes.CDLL(str(module)).cblas_sgemm, ctypes.c_void_p).value
        info = _DlInfo()
        if sgemm and ctypes.CDLL(None).dladdr(ctypes.c_void_p(sgemm), ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(os.fsdecode(info.dli_fname))
    except (OSError, AttributeError):
        pass
    return _mapped_openblas()


def _mapped_openblas() -> str | None:
    """Failing dladdr: an OpenBLAS mapped into this process that is not numpy's or scipy's private copy."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    files = {line.split(None, 5)[5] for line in lines if len(line.split(None, 5)) == 6}
    found = sorted(f for f in files if "openblas" in Path(f).name and "scipy_openblas" not in Path(f).name)
    return found[0] if found else None


def describe(library: str | None) -> dict:
    """What the BLAS in `library` says of itself: for OpenBLAS its version, build config, the kernel it
    runs and its thread count; for another BLAS only its file and that it is not OpenBLAS."""
    record: dict = {"library": "unknown", "file": library}
    if library is None:
        record["note"] = "the BLAS pycaffe calls was not found; its kernel is not known"
        return record
    try:
        lib = ctypes.CDLL(library)
        corename, config, threads = lib.openblas_get_corename, lib.openblas_get_config, lib.openblas_get_num_threads
    except (OSError, AttributeError):
        record["note"] = "not OpenBLAS: OPENBLAS_CORETYPE does not choose its kernels, which are not recorded"
        return record
    corename.restype = config.restype = ctypes.c_char_p
    config_text = (config() or b"").decode(errors="replace").strip()
    version = re.match(r"OpenBLAS\s+(\S+)", config_text)
    record.update({"library": "OpenBLAS", "version": version.group(1) if version else "unknown",
                   "config": config_text, "core": (corename() or b"").decode(errors="replace"),
                   "threads": int(threads())})
    return record


def verify(record: dict, choice: Pin, log=print) -> None:
    """Refuse to dump when the BLAS does not run the kernel and the single thread that were pinned:
    the blobs would silently be another CPU's sums."""
    if record["library"] != "OpenBLAS":
        if choice.chosen_by != "default" and choice.core != AUTO:
            raise ParityError(f"{choice.chosen_by} {choice.core}: pycaffe's BLAS ({record['file']}) is not OpenBLAS, "
                              "so its kernel cannot be pinned")
        log(f"parity dump: warning: pycaffe's BLAS ({record['file']}) is not OpenBLAS; its kernel is not pinned "
            "and the blobs may differ on another CPU")
        return
    if choice.core != AUTO and record["core"].lower() != choice.core.lower():
        raise ParityError(f"OpenBLAS runs the {record['core'] or 'unknown'} kernels, not the {choice.core} ones "
                          f"requested by {choice.chosen_by} (was it loaded before OPENBLAS_CORETYPE was set?)",
                          record["file"])
    if record["threads"] != 1:
        raise ParityError(f"OpenBLAS runs {record['threads']} threads, not 1 (was it loaded before "
                          "OPENBLAS_NUM_THREADS was set?)", record["file"])
