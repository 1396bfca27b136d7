"""Static checks of docker/Dockerfile, docker/docker-compose.yml, .dockerignore and the install script, offline.

No Docker engine is needed: the Dockerfile is parsed here (continuations joined, stages split) and the compose file
read with PyYAML. scripts/check_docker.sh runs `docker compose config`, hadolint and shellcheck on the same files;
scripts/check_runtime.sh runs the runtime stage's install step, CMD and HEALTHCHECK outside Docker; scripts/docker_ci.sh
builds the images and runs them (tests/docker).
"""
from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
INSTALL_RUNTIME = ROOT / "scripts" / "install_runtime.sh"
LS_IMAGE = "heartexlabs/label-studio:1.23.2"
TORCH_WORDS = ("torch", "requirements-export", "install_export_deps", "sam2==", "nncf")


# ------------------------------------------------------------------ Dockerfile parsing

@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse_dockerfile(text: str) -> tuple[list[tuple[str, str]], list[Stage]]:
    """(global instructions before the first FROM, stages); comments dropped, `\\` continuations joined."""
    lines, buf = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):  # comment inside a continued instruction
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    head: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            stages.append(Stage(name=name, base=words[0]))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
        else:
            head.append((keyword, rest))
    return head, stages


@pytest.fixture(scope="module")
def dockerfile():
    head, stages = parse_dockerfile(DOCKERFILE.read_text())
    return head, {s.name: s for s in stages}, stages


@pytest.fixture(scope="module")
def runtime(dockerfile):
    _, by_name, stages = dockerfile
    assert stages[-1].name == "runtime", "the last stage (the default build target) must be `runtime`"
    return by_name["runtime"]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), f"not exec form: {args}"
    return value


def healthcheck_cmd(stage: Stage) -> list[str]:
    hc = stage.args("HEALTHCHECK")
    assert len(hc) == 1, "runtime stage needs exactly one HEALTHCHECK"
    options, sep, cmd = hc[0].partition(" CMD ")
    assert sep, "HEALTHCHECK must use CMD"
    return exec_form(cmd.strip())


def stage_env(stage: Stage) -> dict[str, str]:
    env = {}
    for args in stage.args("ENV"):
        for kv in shlex.split(args):
            k, _, v = kv.partition("=")
            env[k] = v
    return env


# ------------------------------------------------------------------ runtime stage: what it installs

def test_runtime_stage_installs_only_through_install_runtime_sh(runtime):
    runs = runtime.args("RUN")
    assert any(re.search(r"\bbash scripts/install_runtime\.sh\b", r) for r in runs), runs
    assert not any("pip install" in r for r in runs), "the runtime stage must install through install_runtime.sh only"
    for keyword, args in runtime.instructions:
        if keyword in ("RUN", "COPY", "ADD"):
            for word in TORCH_WORDS:
                assert word not in args, f"runtime stage {keyword} mentions {word!r}: {args}"


def test_install_runtime_sh_is_requirements_txt_without_torch():
    script = INSTALL_RUNTIME.read_text()
    commands = [ln for ln in script.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    installs = [ln for ln in commands if "install" in ln]
    assert installs == ['$PIP install --no-cache-dir -r "$here/requirements.txt"'], installs
    assert 'PIP=${PIP:-pip}' in script
    reqs = [ln.split("#")[0].strip().lower() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert not [r for r in reqs if re.match(r"(torch|torchvision|sam2|nncf)\b", r)], reqs


def test_runtime_stage_takes_nothing_from_the_torch_stage(dockerfile, runtime):
    _, by_name, _ = dockerfile
    assert runtime.base == "${PYTHON_IMAGE}"
    froms = [re.search(r"--from=(\S+)", a).group(1) for a in runtime.args("COPY") if "--from=" in a]
    assert froms == ["model"], f"runtime copies only the chosen model, got --from={froms}"
    model = by_name["model"]
    assert model.base == "model-${MODEL_SOURCE}" and not model.instructions


def test_model_sources_and_local_needs_no_torch(dockerfile):
    head, by_name, _ = dockerfile
    default = [a for k, a in head if k == "ARG" and a.startswith("MODEL_SOURCE=")]
    assert default == ["MODEL_SOURCE=download"]
    assert by_name["export"].base == "${PYTHON_IMAGE}"
    assert [a for k, a in head if k == "ARG" and a.startswith("PYTHON_IMAGE=")] == ["PYTHON_IMAGE=python:3.11-slim-bookworm"]
    export_runs = " ".join(by_name["export"].args("RUN"))
    # CPU torch from the PyTorch index by default; docker/wheels/ (bind-mounted, never a layer) can hold the wheel
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in by_name["export"].args("ARG")
    assert 'PIP_FIND_LINKS=/wheels TORCH_INDEX_URL="${TORCH_INDEX_URL}" bash scripts/install_export_deps.sh' in export_runs
    assert export_runs.startswith("--mount=type=bind,source=docker/wheels,target=/wheels ")
    assert not any("wheels" in a for a in by_name["export"].args("COPY")), "wheels must not be copied into a layer"
    assert "scripts/install_runtime.sh" in export_runs  # the exporter converts with OpenVINO
    download = " ".join(by_name["model-download"].args("RUN"))
    assert by_name["model-download"].base == "export"
    assert "--download" in download and "--verify" in download and '--out "/models/${MODEL}"' in download
    rnd = " ".join(by_name["model-random-init"].args("RUN"))
    assert by_name["model-random-init"].base == "export" and "--random-init" in rnd
    local = by_name["model-local"]
    assert local.base == "scratch" and not local.args("RUN"), "MODEL_SOURCE=local must not need the torch stage"
    assert local.args("COPY") == ["${LOCAL_MODEL_DIR}/ /models/${MODEL}/"]
    assert "LOCAL_MODEL_DIR=models/${MODEL}" in local.args("ARG")
    for name in ("model-download", "model-random-init"):
        args = by_name[name].args("ARG")
        for want in ("MODEL=sam2.1_hiera_tiny", "PRECISION=bf16", "IMAGE_SIZE=1024"):
            assert want in args, f"{name} lacks ARG {want}"


# ------------------------------------------------------------------ runtime stage: how it runs

def test_runtime_runs_as_non_root(runtime):
    users = runtime.args("USER")
    assert users, "runtime stage has no USER"
    assert users[-1].split(":")[0] == "10001", users
    runs = " ".join(runtime.args("RUN"))
    assert "--uid 10001" in runs
    last_user = max(i for i, (k, _) in enumerate(runtime.instructions) if k == "USER")
    assert all(k not in ("RUN",) for k, _ in runtime.instructions[last_user + 1:]), "no RUN after dropping root"


def test_healthcheck_hits_health_with_python(runtime):
    cmd = healthcheck_cmd(runtime)
    assert cmd[:2] == ["python", "-c"], cmd
    code = cmd[2]
    assert "urllib.request" in code and "/health'" in code and "'UP'" in code
    assert "os.environ.get('HEALTH_PORT', '9091')" in code and "os.environ.get('PORT', '9090')" in code
    compile(code, "<healthcheck>", "exec")
    assert not any(tool in " ".join(cmd) for tool in ("curl", "wget"))


def test_cmd_is_the_entrypoint_with_one_gunicorn_worker(runtime):
    assert [exec_form(c) for c in runtime.args("CMD")] == [["sh", "/app/docker/entrypoint.sh"]]
    assert "docker/entrypoint.sh docker/" in runtime.args("COPY")
    assert runtime.args("EXPOSE") == ["9090"]
    sh = ENTRYPOINT.read_text()
    lines = sh.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("exec gunicorn"))
    command = [lines[at]]
    while command[-1].endswith("\\"):  # continuation lines
        command.append(lines[at + len(command)])
    full = " ".join(ln.rstrip("\\").strip() for ln in command)
    for part in ('--bind "0.0.0.0:${PORT}"', "--workers 1", '--threads "${THREADS}"', "--timeout 60",
                 "--graceful-timeout 30", "_wsgi:app", "--worker-class backend.serving.gworker.HeaderDeadlineWorker"):
        assert part in full, f"entrypoint's gunicorn lacks {part}: {full}"
    assert 'if [ "${WORKERS:-1}" != "1" ]' in sh


def test_runtime_env_defaults(runtime):
    env = stage_env(runtime)
    assert env["MODEL_DIR"] == "/models/${MODEL}"
    assert "COPY --from=model /models/${MODEL}/ /models/${MODEL}/" in [f"COPY {a}" for a in runtime.args("COPY")]
    assert env["PORT"] == "9090" and env["WORKERS"] == "1" and env["THREADS"] == "8"
    assert env["PRECISION"] in ("auto", "f32", "bf16")
    assert env["DATA_DIR"] == "/data"
    runs = " ".join(runtime.args("RUN"))
    assert "chown 10001:10001 /data" in runs, "DATA_DIR must be writable by the service user"


def test_dockerignore_is_an_allow_list_covering_every_copy(dockerfile):
    _, _, stages = dockerfile
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert patterns[0] == "*", "start by excluding everything"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]

    def included(path: str) -> bool:
        return any(path == a or path.startswith(a + "/") or fnmatch.fnmatch(path, a) for a in allowed)

    sources = []
    for stage in stages:
        for args in stage.args("COPY"):
            if "--from=" in args:
                continue
            sources += [s.rstrip("/") for s in args.split()[:-1] if not s.startswith("--")]
    assert sources
    for src in sources:
        src = src.replace("${LOCAL_MODEL_DIR}", "models/sam2.1_hiera_tiny")
        assert included(src), f"{src} is copied by the Dockerfile but excluded by .dockerignore"
    assert included("docker/wheels"), "the export stage bind-mounts docker/wheels from the build context"
    for never in (".venv", ".ls-venv", ".cache", ".git", "tests", "artifacts", "checkpoints", "node_modules"):
        assert not included(never), f"{never} reaches the build context"


# ------------------------------------------------------------------ compose

def test_label_studio_image_is_the_official_1_23_2_unless_overridden(compose):
    assert compose["services"]["label-studio"]["image"] == "${LABEL_STUDIO_IMAGE:-" + LS_IMAGE + "}"


def test_the_ci_standin_override_replaces_only_the_label_studio_image():
    override = yaml.safe_load((ROOT / "tests" / "docker" / "compose.label-studio-standin.yml").read_text())
    assert override == {"services": {"label-studio": {"image": "sam2-ci/label-studio-standin:1.23.2"}}}
    assert "standin" in override["services"]["label-studio"]["image"]  # named a stand-in, never the official name


def test_ports_bound_to_loopback(compose):
    seen = 0
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r}"
            seen += 1
    assert seen == 2


def test_backend_service_wiring(compose):
    be = compose["services"]["sam2-backend"]
    ls = compose["services"]["label-studio"]
    assert be["build"] == {"context": "..", "dockerfile": "docker/Dockerfile", "args": be["build"]["args"]}
    assert set(be["build"]["args"]) == {"MODEL", "MODEL_SOURCE", "PRECISION", "IMAGE_SIZE"}
    assert be["depends_on"] == {"label-studio": {"condition": "service_healthy"}}
    env, lsenv = be["environment"], ls["environment"]
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert env["WORKERS"] == "1"
    assert env["MODEL_DIR"] == "/models/" + be["build"]["args"]["MODEL"]
    # the backend's key: a dedicated user's token when set, else LS's first user's (required, no default)
    assert env["LABEL_STUDIO_API_KEY"].startswith("${SAM2_BACKEND_LS_TOKEN:-${LABEL_STUDIO_USER_TOKEN:?")
    assert lsenv["LABEL_STUDIO_USER_TOKEN"].startswith("${LABEL_STUDIO_USER_TOKEN:?")
    # same local-files root, same volume, read-only for the backend
    root = lsenv["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert env["LOCAL_FILES_DOCUMENT_ROOT"] == root
    ls_files = [v for v in ls["volumes"] if v.split(":")[-1] == root]
    be_files = [v for v in be["volumes"] if v.split(":")[-2:] == [root, "ro"]]
    assert len(ls_files) == 1 and len(be_files) == 1
    assert ls_files[0].rsplit(":", 1)[0] == be_files[0].rsplit(":", 2)[0]


def test_label_studio_settings(compose):
    env = compose["services"]["label-studio"]["environment"]
    # a backend at a compose-network (private) address is refused unless both are off (LS 1.23.2)
    assert env["ML_BLOCK_LOCAL_IP"] == "false" and env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["LABEL_STUDIO_USERNAME"].startswith("${LABEL_STUDIO_USERNAME:-")
    for key in ("LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        # no default: compose refuses to start (scripts/check_docker.sh runs `docker compose config` to prove it)
        assert env[key].startswith("${" + key + ":?"), f"{key} must be required, not defaulted"
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"


def test_env_example_carries_no_usable_secret():
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M))
    assert values["LABEL_STUDIO_PASSWORD"] == "" and values["LABEL_STUDIO_USER_TOKEN"] == ""
    assert values["SAM2_BACKEND_LS_TOKEN"] == ""


def test_docker_env_sh_writes_fresh_secrets_and_never_overwrites(tmp_path):
    import subprocess
    script = ROOT / "scripts" / "docker_env.sh"
    a, b = tmp_path / "a.env", tmp_path / "b.env"
    for target in (a, b):
        subprocess.run(["bash", str(script), str(target)], check=True, capture_output=True)
    va = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", a.read_text(), re.M))
    vb = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", b.read_text(), re.M))
    assert re.fullmatch(r"[0-9a-f]{40}", va["LABEL_STUDIO_USER_TOKEN"]) and len(va["LABEL_STUDIO_PASSWORD"]) == 32
    assert va["LABEL_STUDIO_USER_TOKEN"] != vb["LABEL_STUDIO_USER_TOKEN"]
    assert va["LABEL_STUDIO_PASSWORD"] != vb["LABEL_STUDIO_PASSWORD"]
    assert a.stat().st_mode & 0o077 == 0, "the env file must be private (0600)"
    before = a.read_text()
    again = subprocess.run(["bash", str(script), str(a)], capture_output=True, text=True)
    assert again.returncode != 0 and a.read_text() == before


def test_backend_runs_read_only_without_capabilities_and_stops_gracefully(compose, runtime):
    be = compose["services"]["sam2-backend"]
    assert be["read_only"] is True and be["cap_drop"] == ["ALL"]
    assert be["security_opt"] == ["no-new-privileges:true"]
    grace = int(be["stop_grace_period"].rstrip("s"))
    graceful = int(re.search(r"--graceful-timeout (\d+)", ENTRYPOINT.read_text()).group(1))
    assert grace > graceful, "docker must wait longer than gunicorn's graceful timeout before SIGKILL"
    # temp files (gunicorn's heartbeat, control socket) must not need a writable root filesystem
    env = stage_env(runtime)
    assert env["TMPDIR"] == "/dev/shm" and env["XDG_RUNTIME_DIR"] == "/dev/shm"


def test_healthchecks(compose, runtime):
    ls = compose["services"]["label-studio"]["healthcheck"]
    assert ls["test"][0] == "CMD" and "/health/" in " ".join(ls["test"])
    be = compose["services"]["sam2-backend"]["healthcheck"]
    assert be["test"] == ["CMD"] + healthcheck_cmd(runtime), "compose and image healthchecks differ"


def _referenced_env(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))


def test_env_example_documents_every_compose_variable():
    used = _referenced_env(COMPOSE.read_text())
    example = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example, re.M))
    assert used - documented == set(), f"variables used by compose but not in .env.example: {used - documented}"
    assert documented - used == set(), f".env.example lists variables compose ignores: {documented - used}"


def test_every_env_var_documented_inline():
    """Each `KEY: value` in an environment: or build args: block has its own comment line right above it."""
    lines = COMPOSE.read_text().splitlines()
    in_block, undocumented, seen = False, [], 0
    for prev, ln in zip(lines, lines[1:]):
        s = ln.strip()
        if s in ("environment:", "args:"):
            in_block = True
            continue
        if not in_block or s.startswith("#"):
            continue
        m = re.match(r"\s+([A-Z][A-Z0-9_]*):", ln)
        if not m:
            in_block = False
            continue
        seen += 1
        if not prev.strip().startswith("#"):
            undocumented.append(m.group(1))
    assert seen >= 25
    assert not undocumented, f"no comment right above: {undocumented}"


def _backend_sources() -> str:
    files = sorted((ROOT / "backend").rglob("*.py")) + [ROOT / "_wsgi.py", ENTRYPOINT]
    return "\n".join(p.read_text() for p in files if p.is_file())


def _reads(name: str, src: str) -> bool:
    return bool(re.search(rf"""["']{name}["']|\$\{{{name}\b|\${name}\b""", src))


def test_every_backend_env_var_is_read_by_the_backend(compose, runtime):
    """Names set in compose's sam2-backend environment and the image's ENV must appear in backend/, _wsgi.py or
    docker/entrypoint.sh (read at test time, so this follows the code)."""
    src = _backend_sources()
    names = set(compose["services"]["sam2-backend"]["environment"]) | set(stage_env(runtime))
    names -= {"PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_ROOT_USER_ACTION",
              "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "TMPDIR",  # read by pip and python themselves
              "XDG_RUNTIME_DIR"}  # read by gunicorn (its control socket)
    unread = sorted(n for n in names if not _reads(n, src))
    assert not unread, f"set for the backend but read nowhere in backend/, _wsgi.py, docker/entrypoint.sh: {unread}"
