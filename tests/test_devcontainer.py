""".devcontainer/: the files parse and agree with pyproject.toml, constraints.txt and the Makefile.

Docker is not needed: the Dockerfile and devcontainer.json are read as text.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
DEVCONTAINER_DIR = ROOT / ".devcontainer"
DEVCONTAINER_JSON = DEVCONTAINER_DIR / "devcontainer.json"
JUPYTER_PORT = 8888


# --- parsing helpers ----------------------------------------------------------------------------


def strip_jsonc(text: str) -> str:
    """Remove // and /* */ comments, leaving string literals (e.g. "https://...") intact."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end == -1 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            assert end != -1, "unterminated /* comment in devcontainer.json"
            i = end + 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def load_devcontainer() -> dict[str, Any]:
    config = json.loads(strip_jsonc(DEVCONTAINER_JSON.read_text()))
    assert isinstance(config, dict)
    return config


def build_context() -> Path:
    return (DEVCONTAINER_DIR / load_devcontainer().get("build", {}).get("context", ".")).resolve()


def dockerfile_path() -> Path:
    build = load_devcontainer().get("build", {})
    assert "dockerfile" in build, "devcontainer.json has no build.dockerfile"
    return (DEVCONTAINER_DIR / build["dockerfile"]).resolve()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in dockerfile_path().read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current.strip():
        logical.append(current)
    pairs = []
    for entry in logical:
        keyword, _, args = entry.partition(" ")
        pairs.append((keyword.upper(), args.strip()))
    return pairs


def expand_args(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Substitute ${NAME} / $NAME with ARG defaults, in order of declaration."""
    defaults: dict[str, str] = {}

    def substitute(text: str) -> str:
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: defaults.get(m[1] or m[2], m[0]),
            text,
        )

    expanded = []
    for keyword, args in instructions:
        args = substitute(args)
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
        expanded.append((keyword, args))
    return expanded


def makefile_text() -> str:
    return (ROOT / "Makefile").read_text()


def makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*(?:\?=|:=|=)\s*(.*?)\s*$", makefile_text(), re.MULTILINE)
    assert match, f"Makefile does not set {name}"
    return match[1]


def makefile_targets() -> set[str]:
    targets = set()
    for match in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile_text(), re.MULTILINE):
        if not match[1].startswith("."):
            targets.add(match[1])
    return targets


def post_create_commands() -> list[str]:
    """postCreateCommand as shell strings (it may be a string, an argv list or a named set)."""
    command = load_devcontainer().get("postCreateCommand")
    assert command, "devcontainer.json has no postCreateCommand"
    parts = list(command.values()) if isinstance(command, dict) else [command]
    return [part if isinstance(part, str) else shlex.join(part) for part in parts]


def shell_commands(line: str) -> list[list[str]]:
    """A shell command line split into simple commands (at &&, ||, ;, |), quotes respected."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&", "(", ")"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in the Dockerfile's RUN instructions."""
    installs = []
    for keyword, args in expand_args(dockerfile_instructions()):
        if keyword != "RUN":
            continue
        for words in shell_commands(args):
            for i in range(len(words) - 1):
                if re.fullmatch(r"(.*/)?pip3?(\.\d+)?", words[i]) and words[i + 1] == "install":
                    installs.append(words[i + 2 :])
                    break
                if words[i : i + 3] == ["-m", "pip", "install"]:
                    installs.append(words[i + 3 :])
                    break
    return installs


def make_targets_in(command: str) -> list[str]:
    """The targets of every `make` invocation in a shell command line."""
    targets: list[str] = []
    for words in shell_commands(command):
        if not (words[0] == "make" or words[0].endswith("/make")):
            continue
        skip_value = False
        for word in words[1:]:
            if skip_value:
                skip_value = False
            elif word in {"-C", "-f", "-I", "-o", "-W", "--directory", "--file", "--makefile"}:
                skip_value = True  # an option whose value is the next word, not a target
            elif not word.startswith("-") and "=" not in word:
                targets.append(word)
    return targets


def image_python_version() -> str:
    bases = [args for keyword, args in expand_args(dockerfile_instructions()) if keyword == "FROM"]
    assert bases, "the Dockerfile has no FROM"
    final = bases[-1].split()[0]
    match = re.match(r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)", final)
    assert match, f"base image {final!r} is not an official python:X.Y image"
    return match[1]


def copied_files() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD from the build context (not --from=stage)."""
    copies = []
    for keyword, args in expand_args(dockerfile_instructions()):
        if keyword not in {"COPY", "ADD"}:
            continue
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        if any(flag.startswith("--from") for flag in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        assert len(paths) >= 2, f"{keyword} {args}: needs a source and a destination"
        copies.append((paths[:-1], paths[-1]))
    return copies


def constraints_pin(package: str) -> str:
    text = (ROOT / "constraints.txt").read_text()
    match = re.search(rf"^{package}==(\S+)", text, re.MULTILINE)
    assert match, f"constraints.txt does not pin {package}"
    return match[1]


# --- tests --------------------------------------------------------------------------------------


def test_strip_jsonc_keeps_strings() -> None:
    text = '{"url": "https://x/y", // comment\n "b": "a /* not */ c", /* block */ "n": 1}'
    assert json.loads(strip_jsonc(text)) == {"url": "https://x/y", "b": "a /* not */ c", "n": 1}


def test_devcontainer_json_is_valid() -> None:
    config = load_devcontainer()
    assert config.get("name"), "devcontainer.json has no name"
    assert dockerfile_path().is_file(), f"build.dockerfile {dockerfile_path()} does not exist"
    assert build_context().is_dir(), f"build.context {build_context()} is not a folder"
    assert dockerfile_instructions()[0][0] in {"FROM", "ARG"}, "the Dockerfile must start with FROM"


def test_python_version_matches_pyproject_and_makefile() -> None:
    version = image_python_version()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{version}.0"), f"Python {version} not in {requires}"
    # `make setup` creates the venv with $(PYTHON); the image must provide exactly that one.
    assert makefile_variable("PYTHON") == f"python{version}", "Makefile PYTHON != the image's"
    for command in post_create_commands():
        for named in re.findall(r"\bpython(\d+\.\d+)\b", command):
            assert named == version, f"postCreateCommand uses python{named}, image has {version}"


def test_torch_matches_constraints_and_comes_from_pypi() -> None:
    pin = constraints_pin("torch")
    copied_constraints = {
        dest
        for sources, dest in copied_files()
        if any(Path(source).name == "constraints.txt" for source in sources)
    }
    torch_installs = [
        words for words in pip_installs() if any(re.match(r"torch\b", word) for word in words)
    ]
    assert torch_installs, "the Dockerfile does not pip install torch"
    for words in torch_installs:
        command = shlex.join(words)
        # PyPI's Linux wheel is the CUDA build; PyTorch's own indexes also serve CPU-only wheels.
        index_flags = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links"}
        assert not [w for w in words if w.split("=")[0] in index_flags], (
            f"torch must come from PyPI: pip install {command}"
        )
        versions = [m[1] for w in words if (m := re.fullmatch(r"torch==([\w.+]+)", w))]
        assert all(v == pin for v in versions), f"Dockerfile torch {versions} != constraints {pin}"
        constraints = [
            words[i + 1] for i, w in enumerate(words[:-1]) if w in {"-c", "--constraint"}
        ] + [w.split("=", 1)[1] for w in words if w.startswith("--constraint=")]
        assert versions or set(constraints) & copied_constraints, (
            f"torch is installed neither pinned nor with -c constraints.txt: pip install {command}"
        )


def test_run_args_request_all_gpus() -> None:
    args = load_devcontainer().get("runArgs", [])
    pairs = list(itertools.pairwise(args))
    assert ("--gpus", "all") in pairs or "--gpus=all" in args, f"runArgs {args} lack --gpus all"


def test_forwarded_ports_include_jupyter_and_mlflow_ui() -> None:
    ui_port = int(makefile_variable("UI_PORT"))
    ports = {
        int(str(port).rsplit(":", 1)[-1]) for port in load_devcontainer().get("forwardPorts", [])
    }
    assert JUPYTER_PORT in ports, f"forwardPorts {sorted(ports)} lack Jupyter's {JUPYTER_PORT}"
    assert ui_port in ports, f"forwardPorts {sorted(ports)} lack the Makefile's UI_PORT {ui_port}"


def test_post_create_command_runs_existing_make_targets() -> None:
    targets = [t for command in post_create_commands() for t in make_targets_in(command)]
    assert targets, f"postCreateCommand runs no make target: {post_create_commands()}"
    missing = set(targets) - makefile_targets()
    assert not missing, f"postCreateCommand runs make targets the Makefile lacks: {missing}"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("make setup", ["setup"]),
        ("sudo chown u .venv && python3.11 -m venv .venv && make -j2 setup EXTRAS=dev", ["setup"]),
        ("make setup&&make test", ["setup", "test"]),
        ("make -C /repo -f Makefile lint", ["lint"]),
        ("echo make", []),
    ],
)
def test_make_targets_in(command: str, expected: list[str]) -> None:
    assert make_targets_in(command) == expected


def test_venv_volume_is_the_makefile_venv() -> None:
    venv = makefile_variable("VENV")
    targets = []
    for mount in load_devcontainer().get("mounts", []):
        fields = (
            dict(f.split("=", 1) for f in mount.split(",")) if isinstance(mount, str) else mount
        )
        targets.append(fields.get("target") or fields.get("destination") or fields.get("dst"))
    assert f"${{containerWorkspaceFolder}}/{venv}" in targets, f"no volume on {venv}: {targets}"


def test_dockerfile_referenced_files_exist() -> None:
    context = build_context()
    copies = copied_files()
    assert copies, "the Dockerfile copies nothing (constraints.txt is expected)"
    for sources, _ in copies:
        for source in sources:
            if re.match(r"https?://", source):
                continue
            matches = list(context.glob(source))
            assert matches, f"COPY source {source} does not exist under {context}"


def test_remote_user_is_created_in_the_image() -> None:
    user = load_devcontainer().get("remoteUser", "root")
    if user == "root":
        return
    runs = [args for keyword, args in expand_args(dockerfile_instructions()) if keyword == "RUN"]
    assert any(re.search(rf"useradd\b.*\b{re.escape(user)}\b", run) for run in runs), (
        f"remoteUser {user} is not created in the Dockerfile"
    )


def test_vscode_extensions() -> None:
    extensions = (
        load_devcontainer().get("customizations", {}).get("vscode", {}).get("extensions", [])
    )
    for required in ("ms-python.python", "ms-toolsai.jupyter"):
        assert required in extensions, f"customizations.vscode.extensions lacks {required}"
