"""Reading the deploy/ files for the tests: the configs, the Dockerfile's instructions,
and the shell commands all four files hold (deploy/ is not a package, and
deploy/await_cluster.py is imported from its path)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from types import ModuleType

import yaml

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: pytest brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
LAUNCHER = DEPLOY / "ray-cluster.yaml"
KUBERAY = DEPLOY / "kuberay-raycluster.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
OPERATIONS = DEPLOY / "OPERATIONS.md"
AWAIT_CLUSTER = DEPLOY / "await_cluster.py"
LAUNCHER_COMMAND_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands",
                         "worker_setup_commands", "head_start_ray_commands",
                         "worker_start_ray_commands")


def load_await_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("await_cluster", AWAIT_CLUSTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# --- reading the files ---------------------------------------------------------------------

def launcher_config() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def kubernetes_objects() -> dict[str, dict]:
    """The manifest's objects by kind (it has one of each)."""
    docs = [doc for doc in yaml.safe_load_all(KUBERAY.read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), f"{KUBERAY} has two objects of one kind"
    return by_kind


def ray_cluster() -> dict:
    return kubernetes_objects()["RayCluster"]


def pod_groups(cluster: dict) -> dict[str, dict]:
    """'head' and each worker group's name -> its pod spec."""
    groups = {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"]}
    for group in cluster["spec"].get("workerGroupSpecs", []):
        groups[group["groupName"]] = group["template"]["spec"]
    return groups


def pinned_ray_version() -> str:
    pins = [dep.split("==", 1)[1] for dep in pyproject()["project"]["dependencies"]
            if re.fullmatch(r"ray\s*==\s*\S+", dep)]
    assert len(pins) == 1, "pyproject.toml pins ray once (ray==X)"
    return pins[0].strip()


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction: continuations joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue            # Docker drops comment and empty lines, inside continuations too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    return [(line.split(None, 1)[0].upper(), (line.split(None, 1) + [""])[1]) for line in logical]


def exec_form(arguments: str) -> list[str]:
    """ENTRYPOINT/CMD arguments as the words Docker runs: JSON exec form, else sh -c."""
    if arguments.lstrip().startswith("["):
        return json.loads(arguments)
    return ["/bin/sh", "-c", arguments]


# --- shell commands in the files -----------------------------------------------------------

SHELL_OPERATOR_CHARS = "();<>|&\n"
# Words before a command's program: shell keywords, and wrappers that run the rest
COMMAND_PREFIXES = {"exec", "nohup", "command", "time", "then", "do", "else", "{", "!", "tini", "--"}
_COMMENT = re.compile(r"(?:^|(?<=\s))#[^\n]*", re.MULTILINE)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"python(3(\.\d+)?)?")


def shell_words(script: str) -> list[str]:
    """The words of a POSIX shell script, with its operators (newlines too) as words.

    Comments (# at the start of a word) are dropped first, which is right for the
    scripts in deploy/: none has a # inside quotes."""
    script = _COMMENT.sub("", script.replace("\\\n", " "))
    lexer = shlex.shlex(script, posix=True, punctuation_chars=SHELL_OPERATOR_CHARS)
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def is_operator(word: str) -> bool:
    return word != "" and all(c in SHELL_OPERATOR_CHARS for c in word)


def commands_in(words: list[str], program: str) -> list[list[str]]:
    """Every simple command in ``words`` that runs ``program`` (compared by file name;
    through ``python`` for a script), as [program, *arguments]. A word that holds a
    whole script (``sh -c '...'``, ``bash -lc '...'``) is searched too."""
    found = []
    at_command_start = True
    for i, word in enumerate(words):
        if is_operator(word):
            at_command_start = True
        elif any(c.isspace() for c in word):
            found += commands_in(shell_words(word), program)
            at_command_start = False
        elif at_command_start and PurePosixPath(word).name == program:
            found.append([program, *_arguments(words, i + 1)])
            at_command_start = False
        elif at_command_start and (PurePosixPath(word).name in COMMAND_PREFIXES
                                   or _ASSIGNMENT.match(word)
                                   or _PYTHON.fullmatch(PurePosixPath(word).name)):
            continue             # the program's name is still to come
        else:
            at_command_start = False
    return found


def _arguments(words: list[str], start: int) -> list[str]:
    arguments = []
    for j in range(start, len(words)):
        word = words[j]
        if is_operator(word):
            break
        if word.isdigit() and j + 1 < len(words) and words[j + 1][:1] in "<>":
            break                # the 2 of 2>&1
        arguments.append(word)
    return arguments


def command_sources() -> list[tuple[str, str, list[str]]]:
    """(file, where in it, words) for every place in deploy/ that holds commands."""
    sources = []
    config = launcher_config()
    for key in LAUNCHER_COMMAND_KEYS:
        for i, script in enumerate(config.get(key) or []):
            sources.append((LAUNCHER.name, f"{key}[{i}]", shell_words(script)))
    for group, spec in pod_groups(ray_cluster()).items():
        for container in spec["containers"]:
            words = [*container.get("command", []), *container.get("args", [])]
            sources.append((KUBERAY.name, f"{group}/{container['name']}", words))
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    for i, (name, arguments) in enumerate(instructions):
        if name == "RUN":
            sources.append((DOCKERFILE.name, f"RUN #{i}", shell_words(arguments)))
    entrypoint = [exec_form(a) for n, a in instructions if n == "ENTRYPOINT"][-1:]
    cmd = [exec_form(a) for n, a in instructions if n == "CMD"][-1:]
    sources.append((DOCKERFILE.name, "ENTRYPOINT+CMD", [w for ws in entrypoint + cmd for w in ws]))
    blocks = re.findall(r"^[ \t]*```(?:sh|bash|shell)\n(.*?)^[ \t]*```", OPERATIONS.read_text(),
                        re.MULTILINE | re.DOTALL)
    for i, block in enumerate(blocks):
        sources.append((OPERATIONS.name, f"block {i + 1}", shell_words(block)))
    return sources


def invocations(program: str) -> list[tuple[str, str, list[str]]]:
    return [(file, where, argv) for file, where, words in command_sources()
            for argv in commands_in(words, program)]


def option_value(argv: list[str], option: str) -> str | None:
    for i, word in enumerate(argv):
        if word == option and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def image_paths(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Source path in the checkout -> where it lands in the image, for every COPY."""
    paths, workdir = {}, PurePosixPath("/")
    for name, arguments in instructions:
        if name == "WORKDIR":
            workdir = workdir / arguments.strip()
        elif name == "COPY":
            *sources, destination = arguments.split()
            base = workdir / destination
            for source in sources:
                if (REPO / source).is_dir():              # its contents go to the destination
                    paths[source.rstrip("/")] = str(base)
                elif destination.endswith("/") or destination == "." or len(sources) > 1:
                    paths[source] = str(base / PurePosixPath(source).name)
                else:
                    paths[source] = str(base)
    return paths
