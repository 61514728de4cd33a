"""The API process never loads torch, the model or the worker."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys
from app.main import create_app
from app.settings import Settings
import app.auth, app.jobs, app.queue, app.schemas, app.storage, app.webhooks, app.metrics
app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))
app.openapi()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "model", "worker"))))
"""


def test_app_imports_neither_torch_nor_model_nor_worker():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
