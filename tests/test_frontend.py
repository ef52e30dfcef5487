"""The dashboard's unit tests (Vitest, frontend/src/**/*.test.ts) as part of the pytest run, so
the README's one test command covers them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FRONTEND = Path(__file__).resolve().parents[1] / "frontend"


def test_frontend_unit_tests_pass():
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: the dashboard's unit tests need Node.js 20+ and npm")
    assert (FRONTEND / "node_modules").is_dir(), (
        "run scripts/install.sh (it runs npm ci in frontend/)"
    )
    result = subprocess.run(
        [npm, "test", "--silent"],
        cwd=FRONTEND,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CI": "1", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, (
        f"npm test failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    )
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout[-3000:]
