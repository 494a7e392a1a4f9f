"""The child process's side of a verification run apart from the console:
``python -m proctor.web.verification HOME`` verifies the home's ledger and prints the
result as one JSON object."""

from __future__ import annotations

import sys
from dataclasses import asdict

import orjson

from proctor.web.status import verify_home


def main(argv: list[str]) -> int:
    """Verify the home named in ``argv`` and print the result; 2 for bad usage."""
    if len(argv) != 1:
        print("usage: python -m proctor.web.verification HOME", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(orjson.dumps(asdict(verify_home(argv[0]))))

    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
