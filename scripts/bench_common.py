"""Helpers shared by the comparison scripts: the bench venv and the flowsense binary."""

import os
import subprocess
import sys
from pathlib import Path

VENV = Path.home() / ".cache/flowsense/bench-venv"


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
