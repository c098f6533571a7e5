"""The README's "Writing a pack for your platform" walkthrough, run command by command.

The commands are read from the README itself, so the text cannot drift from what works.
"Your platform" is the simulator's latency scenario at one sample a minute, backfilled
into a real Prometheus; `http://prometheus:9090` in the README stands for it, and
`csf serve --config csf.yaml` gets a config pointing at it.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from detector.sim.metrics import METRIC_HELP
from detector.sim.simulator import Simulator
from detector.source.openmetrics import write_openmetrics
from tests._procs import PROMTOOL, PrometheusProcess, require_binary, wait_until
from tests.conftest import start_csf_server

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
DAYS = 2.5


def _commands() -> list[str]:
    section = README.read_text(encoding="utf-8").split("### Writing a pack for your platform", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_the_walkthrough_leads_from_nothing_to_a_verdict(tmp_path: Path) -> None:
    promtool = require_binary(PROMTOOL)
    om = tmp_path / "platform.om"
    end = math.floor(time.time() / 60) * 60 - 60  # the platform's data runs up to a minute ago
    origin = end - DAYS * 86400
    sim = Simulator("latency_binding", 9, origin=origin, interval=60.0)
    with open(om, "w", encoding="utf-8") as fh:
        write_openmetrics(fh, sim.generate(origin, end + 1), help=METRIC_HELP)
    tsdb = tmp_path / "tsdb"
    res = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=96h", "-q", str(om), str(tsdb)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    om.unlink()
    commands = _commands()
    assert [c.split()[1] for c in commands] == ["pack", "pack", "pack", "backtest", "rules", "serve"]
    with PrometheusProcess(tmp_path / "prom", "global: {}\n", data_dir=tsdb,
                           extra_args=("--storage.tsdb.retention.time=10y",)) as prom:
        prom.wait_ready(60)
        work = tmp_path / "work"
        work.mkdir()
        outputs: list[subprocess.CompletedProcess[str]] = []
        for command in commands[:-1]:
            argv = shlex.split(command.replace("http://prometheus:9090", prom.url))
            redirect = None
            if ">" in argv:
                i = argv.index(">")
                redirect, argv = argv[i + 1], argv[:i]
            assert argv[0] == "csf"
            proc = subprocess.run([sys.executable, "-m", "detector.cli", *argv[1:]], cwd=work,
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
            if redirect:
                # the user's edit of step 1: this platform has 2.5 days of history, not 7
                text = proc.stdout.replace("  lookback: 7d ", "  lookback: 2d ")
                assert text != proc.stdout
                (work / redirect).write_text(text, encoding="utf-8")
            outputs.append(proc)
        # step 2 said every constraint can be judged, with the learned interval
        assert "every constraint can be judged" in outputs[2].stdout
        assert re.search(r"latency\s+signal\s+\d+\s+9\s+1m\s+5m", outputs[2].stdout), outputs[2].stdout[:1500]
        # step 3 found the latency problem in the history
        assert "latency" in outputs[3].stdout and "invest" in outputs[3].stdout
        # step 4 wrote rules and no runbook was missing for the default pack's names? it wrote skeletons
        assert (work / "my-rules" / "csf-microlearning-video-alerts.yml").is_file()
        assert (work / "my-runbooks" / "constraint-latency.md").is_file()
        # step 5: serve the pack on the live data
        cfg = work / "csf.yaml"
        cfg.write_text(yaml.safe_dump({
            "evaluation_interval": "2s",
            "pipelines": [{"name": "mine", "pack": str(work / "my-pack.yaml"),
                           "source": {"type": "prometheus", "url": prom.url}}],
        }), encoding="utf-8")
        serve_argv = shlex.split(commands[-1])[2:]
        server = start_csf_server(tmp_path / "serve", *serve_argv[:-1], str(cfg))
        try:
            server.wait_ready()

            def verdict() -> bool:
                return httpx.get(server.url + "/api/v1/status", timeout=10).json().get("binding") == "latency"

            wait_until(verdict, 90.0, 0.5, "a verdict on the user's data")
            doc = json.loads(httpx.get(server.url + "/api/v1/status", timeout=10).text)
            assert doc["decision"] == "invest"
        finally:
            assert server.stop() == 0
