"""The YAML presets shipped in conf/, by name; light to import, so `--help` can list them."""

from __future__ import annotations

from pathlib import Path

PRESETS_DIR = Path(__file__).parent


def preset_names() -> list[str]:
    """tiny, demo, full, cluster: every conf/*.yaml, smallest first as the docs order them."""
    order = {"tiny": 0, "demo": 1, "full": 2, "cluster": 3}
    return sorted((p.stem for p in PRESETS_DIR.glob("*.yaml")), key=lambda n: (order.get(n, len(order)), n))
