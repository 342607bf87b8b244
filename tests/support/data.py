"""Where data nobody here made lives: shared/data beside the repository (BROAD, x-io's recording)."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
