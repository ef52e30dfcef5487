"""The dashboard's API types (frontend/src/api-types.ts) are generated from the API's OpenAPI
schema: an API change committed without regenerating them fails here."""

import difflib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "frontend" / "src" / "api-types.ts"


def test_committed_api_types_match_the_api_schema(tmp_path: Path):
    generator = ROOT / "frontend" / "node_modules" / ".bin" / "openapi-typescript"
    assert generator.exists(), "run scripts/install.sh (it runs npm ci in frontend/)"
    fresh = tmp_path / "api-types.ts"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_api_types.py"), "--out", str(fresh)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    committed, expected = COMMITTED.read_text(), fresh.read_text()
    diff = difflib.unified_diff(
        committed.splitlines(), expected.splitlines(), "committed", "from the API", lineterm=""
    )
    assert committed == expected, (
        "frontend/src/api-types.ts is out of date with the API: run "
        "`python scripts/gen_api_types.py` and commit the result\n" + "\n".join(list(diff)[:40])
    )
