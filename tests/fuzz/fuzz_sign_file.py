"""atheris: properties.check_sign_file on arbitrary bytes (see tests/fuzz/harness.py)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from tests.fuzz.harness import main  # noqa: E402

if __name__ == "__main__":
    main("sign_file")
