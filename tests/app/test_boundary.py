"""The API process never loads torch, the model or the worker, even while serving requests."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, socket, sys, threading, time
import httpx, redis, uvicorn
from app.auth import create_key
from app.jobs import JobStore
from app.main import create_app
from app.settings import Settings

settings = Settings(redis_url=sys.argv[1], data_dir=sys.argv[2])
key = create_key(JobStore(redis.Redis.from_url(settings.redis_url), settings), "acme")[0]
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.02)
with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as http:
    video = http.post("/v1/videos", data={"prompt": "a red circle", "seconds": "2"}).json()
    statuses = [http.get(path).status_code for path in
                ("/v1/videos", f"/v1/videos/{video['id']}", "/v1/models", "/metrics", "/openapi.json")]
server.should_exit = True
print(json.dumps({"statuses": statuses,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "model", "worker"))}))
"""


def test_a_serving_api_process_has_not_imported_torch_model_or_worker(redis_url, tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, redis_url, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [200, 200, 200, 200, 200]
    assert report["loaded"] == []
