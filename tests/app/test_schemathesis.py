"""Property-based requests over /openapi.json (schemathesis) against the running API: never a 5xx."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_no_server_errors_for_generated_requests(make_api, tmp_path):
    # Short `Prefer: wait` so that generated waits do not stall the run; SSE streams of
    # queued jobs never end on their own, so that operation is left out.
    api = make_api(max_prefer_wait_seconds=1, max_queued=100000, max_queued_per_tenant=100000,
                   worker_heartbeat_ttl_seconds=3600)
    api.store.heartbeat("fuzz-worker", {"model": "reel-shapes-v1", "model_loaded": True})  # /readyz answers 200
    key = api.new_key("fuzz")
    st = Path(sys.executable).with_name("st")
    command = [
        str(st), "run", f"{api.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", os.environ.get("REEL_FUZZ_EXAMPLES", "25"),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--exclude-path", "/v1/videos/{video_id}/events",
        "--header", f"Authorization: Bearer {key}",
        "--request-timeout", "30",
        "--workers", "1",
        "--seed", "1",
        "--generation-database", "none",
        "--max-time", "60",
        "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
