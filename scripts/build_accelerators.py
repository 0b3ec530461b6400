"""Compile hoopy's pure-Python hot loops with mypyc, when a C compiler is at hand.

Usage: python scripts/build_accelerators.py [--check]

Builds ``hoopy/wire/_rowscan.py``, ``hoopy/wire/_rowmask.py`` and ``hoopy/audit/_canon.py``
into extension modules beside them (gitignored) and records each source's hash in its
``.built`` file; Python then imports the compiled module instead of the source. Rebuilds only
when the source changed. Without mypy or a compiler it says so and exits 0: hoopy works the
same without them, only slower (large results, masking, the audit's record encoding).
``--check`` exits 1 if a compiled module is present but stale.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["hoopy/wire/_rowscan.py", "hoopy/wire/_rowmask.py", "hoopy/audit/_canon.py"]


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp_for(source: Path) -> Path:
    return source.with_suffix(".built")


def built_files(source: Path) -> list[Path]:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    stem = source.with_suffix("")
    return [Path(f"{stem}{suffix}"), Path(f"{stem}__mypyc{suffix}")]


def is_current(source: Path) -> bool:
    stamp = stamp_for(source)
    return (
        stamp.exists()
        and stamp.read_text().strip() == source_hash(source)
        and all(p.exists() for p in built_files(source))
    )


def remove_build(source: Path) -> None:
    for path in [*built_files(source), stamp_for(source)]:
        path.unlink(missing_ok=True)


def build(relative: str) -> bool:
    source = ROOT / relative
    if is_current(source):
        return True
    remove_build(source)  # never leave a stale compiled module shadowing the source
    with tempfile.TemporaryDirectory(prefix="hoopy-mypyc-") as tmp:
        work = Path(tmp)
        # Recreate the package path so the compiled module gets its real name.
        for parent in Path(relative).parents:
            if str(parent) != ".":
                (work / parent).mkdir(parents=True, exist_ok=True)
                (work / parent / "__init__.py").touch()
        shutil.copy(source, work / relative)
        result = subprocess.run(
            [sys.executable, "-m", "mypyc", relative],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            print(f"note: not compiling {relative} ({' / '.join(tail)}); using plain Python")
            return False
        for built in built_files(work / relative):
            shutil.copy(built, source.parent / built.name)
    stamp_for(source).write_text(source_hash(source) + "\n")
    print(f"compiled {relative} with mypyc")
    return True


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = [
            m
            for m in MODULES
            if any(p.exists() for p in built_files(ROOT / m)) and not is_current(ROOT / m)
        ]
        for m in stale:
            print(f"stale compiled module for {m}: run scripts/build_accelerators.py")
        return 1 if stale else 0
    try:
        import mypyc  # noqa: F401
    except ImportError:
        print("note: mypy/mypyc is not installed; hot loops run as plain Python")
        return 0
    for module in MODULES:
        build(module)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
