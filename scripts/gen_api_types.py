"""Write the dashboard's TypeScript types of the API (frontend/src/api-types.ts) from the API's
own OpenAPI schema, so the two cannot disagree.

    python scripts/gen_api_types.py                  # rewrites frontend/src/api-types.ts
    python scripts/gen_api_types.py --out /tmp/x.ts  # writes elsewhere (the test compares)
    (cd frontend && npm run gen:types)               # the same, from the dashboard's folder

The schema is `api.main.create_app().openapi()`, built in process (no server, no database) and
written to a temporary file; openapi-typescript (a devDependency of frontend/, installed by
`npm ci`, which scripts/install.sh runs) turns it into TypeScript. tests/test_api_types.py fails
when the committed file differs from what this writes: change the API, rerun this, commit both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRONTEND = ROOT / "frontend"
TYPES_FILE = FRONTEND / "src" / "api-types.ts"
GENERATOR = FRONTEND / "node_modules" / ".bin" / "openapi-typescript"

HEADER = """\
// GENERATED FILE, do not edit: the API's OpenAPI schema as TypeScript types, written by
// `python scripts/gen_api_types.py` (or `npm run gen:types` in frontend/). Rerun it after
// changing the API; tests/test_api_types.py fails while this file is out of date.
"""


def api_schema() -> dict:
    # this checkout's `api`, whichever directory the script is started from
    sys.path.insert(0, str(ROOT))
    from api.main import create_app

    return create_app().openapi()


def generate(out: Path) -> None:
    if not GENERATOR.exists():
        sys.exit(f"{GENERATOR} is missing: run `npm ci` in frontend/ (scripts/install.sh does)")
    with tempfile.TemporaryDirectory() as tmp:
        schema = Path(tmp) / "openapi.json"
        schema.write_text(json.dumps(api_schema(), indent=1))
        generated = Path(tmp) / "api-types.ts"
        subprocess.run(
            [str(GENERATOR), str(schema), "--output", str(generated)],
            check=True,
            capture_output=True,
            text=True,
        )
        out.write_text(HEADER + generated.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=TYPES_FILE, help="default: %(default)s")
    args = parser.parse_args()
    generate(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
