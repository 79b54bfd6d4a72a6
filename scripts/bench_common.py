"""Helpers shared by the comparison scripts: the bench venv and the flowsense binary."""

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path


def _venv_for(python):
    """The bench venv of one interpreter: a comparison runs on the Python that started it, so
    `/usr/bin/python3 scripts/compare_backtrader.py` measures Backtrader on that build."""
    tag = hashlib.sha1(os.path.realpath(python).encode()).hexdigest()[:8]
    return Path.home() / f".cache/flowsense/bench-venvs/py{sys.version_info[0]}{sys.version_info[1]}-{tag}"


VENV = (
    Path(sys.prefix)
    if os.environ.get("FLOWSENSE_BENCH_VENV") == "1"
    else _venv_for(sys.executable)
)


def python_build():
    """The interpreter in one line, its version and where it lives: builds of one version differ
    (pyenv's default build ran a loop of ours 1.3x slower than Debian's Python here)."""
    base = getattr(sys, "_base_executable", sys.executable)
    return f"{platform.python_implementation()} {platform.python_version()} ({os.path.realpath(base)})"


def ensure(module, package):
    """Imports `module`, or installs `package` into the bench venv and re-runs the script there."""
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("FLOWSENSE_BENCH_VENV") == "1":
            sys.exit(f"{module} is not importable even in the bench venv")
        if not (VENV / "bin/python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin/pip"), "install", "-q", package], check=True)
        env = dict(os.environ, FLOWSENSE_BENCH_VENV="1")
        os.execve(str(VENV / "bin/python"), [str(VENV / "bin/python"), *sys.argv], env)


def flowsense_binary(arg):
    """The `flowsense` to run: `arg`, else the release build in the cargo target dir."""
    if arg:
        return arg
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/flowsense-target"))
    return str(Path(target) / "release/flowsense")
