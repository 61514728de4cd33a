"""model/ is a plain library: it never imports the service or its infrastructure, and never reads the environment."""

import ast
import json
import subprocess
import sys
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[2] / "model"
FORBIDDEN = {"app", "worker", "fastapi", "celery", "redis", "starlette", "uvicorn", "kombu"}


def python_files():
    files = sorted(MODEL_DIR.rglob("*.py"))
    assert MODEL_DIR / "pipeline.py" in files
    return files


def test_no_forbidden_imports_in_model_sources():
    offenders = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_model_never_reads_the_environment():
    offenders = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb", "putenv", "unsetenv"}:
                offenders.append(f"{path.name}:{node.lineno} {node.attr}")
            elif isinstance(node, ast.Name) and node.id in {"environ", "getenv"}:
                offenders.append(f"{path.name}:{node.lineno} {node.id}")
            elif isinstance(node, ast.ImportFrom) and node.module == "os":
                offenders += [f"{path.name}:{node.lineno} os.{a.name}" for a in node.names if "env" in a.name]
    assert offenders == []


def test_importing_the_model_loads_none_of_the_service():
    modules = [
        ".".join(("model",) + p.relative_to(MODEL_DIR).with_suffix("").parts) for p in python_files() if p.stem != "__init__"
    ]
    script = (
        "import importlib, json, sys\n"
        "import model\n"
        "from model import TextToVideo, VideoSpec\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=MODEL_DIR.parent, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "model.pipeline" in loaded and "torch" in loaded
    assert [m for m in loaded if m.split(".")[0] in FORBIDDEN] == []


def test_importing_the_config_stays_light():
    script = "import json, sys\nimport model.config\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=MODEL_DIR.parent, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch" not in json.loads(result.stdout.strip().splitlines()[-1])
