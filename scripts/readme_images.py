"""Make the README's pictures (docs/images/*.png) from the JupyterLab screenshots of the tests.

``tests/e2e/test_lab_screenshots.py`` saves every widget as it looks in JupyterLab under
``test-artifacts/lab-1400/`` and ``test-artifacts/lab-800/``; this copies the 1,400 px ones (or
``--width 800``) to ``docs/images/`` as optimized PNGs. ``make readme-images`` runs both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
NAMES = (
    "activation_max",
    "inversion",
    "deconvnet",
    "attribution",
    "dissection",
    "adversarial",
    "atlas",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1400, choices=(800, 1400))
    parser.add_argument("--src", type=Path, default=None, help="default: test-artifacts/lab-WIDTH")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args(argv)
    src = args.src or REPO / "test-artifacts" / f"lab-{args.width}"
    missing = [n for n in NAMES if not (src / f"{n}.png").is_file()]
    if missing:
        print(
            f"missing screenshots in {src}: {', '.join(missing)}\n"
            "run: python -m pytest -m e2e tests/e2e/test_lab_screenshots.py",
            file=sys.stderr,
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        with Image.open(src / f"{name}.png") as im:
            im.convert("RGB").save(args.out / f"{name}.png", optimize=True)
        print(f"wrote {args.out / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
