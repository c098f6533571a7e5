"""docs/packs.md stays true: its complete example validates, and every field it tables exists."""

from __future__ import annotations

import re
from pathlib import Path

from detector.source.promql import compile_promql
from detector.spec.load import load_pack_text

DOC = Path(__file__).resolve().parents[2] / "docs" / "packs.md"


def _example() -> str:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (example,) = [b for b in blocks if b.startswith("apiVersion: csf/v1")]
    return example


def test_the_complete_example_validates_and_compiles() -> None:
    pack = load_pack_text(_example())
    assert pack.names == ("api_latency", "db_pool", "meta")
    api = pack.constraint("api_latency")
    assert api.target == 0.5  # written as 500ms
    assert compile_promql(api.signal).startswith(
        "histogram_quantile(0.95, sum by (region, http_route, le) "
        '(rate(http_server_request_duration_seconds_bucket{http_response_status_code!~"5.."}[5m])))'
    )
    assert pack.constraint("db_pool").economics.model == "none"


def test_every_tabled_constraint_field_is_a_pack_field() -> None:
    from detector.spec.load_constraint import CONSTRAINT_KEYS

    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Constraints", 1)[1].split("### Guards", 1)[0]
    tabled = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert set(tabled) == set(CONSTRAINT_KEYS)
