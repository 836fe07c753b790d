"""The live bot imports ``nija_broker.compat`` inside its own process: it must stay light.

Checked in a fresh interpreter, because this test process has long since
imported the runtime for other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# The seed's documented calls, as the bot makes them.
_BOT = """
import json, sys
from datetime import datetime

from nija_broker.compat import OrderInfo, get_order_tracker

tracker = get_order_tracker(sys.argv[1])
tracker.add_order(OrderInfo(
    order_id="ORDER-123", account_id="PLATFORM", symbol="BTC-USD", side="buy",
    price=45000.0, quantity=0.01, size_usd=450.0, status="open",
    created_at=datetime.now(), reserved_capital=450.0,
))
held = tracker.get_held_capital("PLATFORM")
print(json.dumps({"held": held, "modules": sorted(sys.modules)}))
"""

_HEAVY_PACKAGES = {"aiohttp", "ccxt", "adapters", "prometheus_client"}
_RUNTIME_MODULES = {
    "nija_broker.service.runtime",
    "nija_broker.service.api",
    "nija_broker.sync.reconciler",
}


def test_bot_process_using_compat_loads_no_exchange_library_and_no_runtime(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _BOT, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert isinstance(answer["held"], int | float)  # the figure itself is compat's to test
    modules = set(answer["modules"])
    assert sorted(m for m in modules if m.split(".")[0] in _HEAVY_PACKAGES) == []
    assert sorted(modules & _RUNTIME_MODULES) == []
