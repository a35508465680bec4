"""maskfarm's one settings pattern (maskfarm.core.settings): fields are flags, variables the fallback."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from maskfarm.core.settings import add_arguments, env_name, from_args, setting
from maskfarm.server.settings import ServerSettings
from maskfarm.worker.settings import MODEL_OPTIONS, WorkerSettings


@dataclass(frozen=True)
class Example:
    url: str = setting("redis://x", "where")
    retries: int = setting(2, "how many")
    wait_s: float = setting(1.5, "how long")
    loud: bool = setting(False, "say more")
    batch: int | None = setting(None, "optional", kind=int)
    roots: tuple[str, ...] = setting((), "folders", flag="--root")
    who: str = setting("", "a name", env="MASKFARM_WHO_AM_I")
    mode: int = setting(0o644, "a file mode", parse=lambda text: int(text, 8), shown="0644")


def parse(argv: list[str], names=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="example", exit_on_error=False)
    add_arguments(Example, parser, names)
    return parser.parse_args(argv)


def test_defaults_then_variables_then_flags(monkeypatch) -> None:
    assert from_args(Example, parse([])) == Example()
    for name, value in [("url", "redis://y"), ("retries", "5"), ("wait_s", "0.25"), ("loud", "1"), ("batch", "8")]:
        monkeypatch.setenv(env_name(name), value)
    monkeypatch.setenv("MASKFARM_ROOTS", "/a,/b")
    monkeypatch.setenv("MASKFARM_WHO_AM_I", "w1")
    monkeypatch.setenv("MASKFARM_MODE", "0600")
    from_env = from_args(Example, parse([]))
    assert from_env == Example("redis://y", 5, 0.25, True, 8, ("/a", "/b"), "w1", 0o600)
    flags = parse(["--retries", "7", "--root", "/c", "--root", "/d", "--batch", "3", "--mode", "0640"])
    assert dataclasses.astuple(from_args(Example, flags))[1:] == (7, 0.25, True, 3, ("/c", "/d"), "w1", 0o640)


def test_a_bad_variable_is_a_usage_error_of_its_own_command_naming_it(monkeypatch) -> None:
    monkeypatch.setenv("MASKFARM_RETRIES", "many")
    parser = argparse.ArgumentParser(prog="example")
    commands = parser.add_subparsers(dest="command", required=True)
    add_arguments(Example, commands.add_parser("uses-it"))
    commands.add_parser("other")
    assert parser.parse_args(["other"]).command == "other"  # building both parsers did not fail
    with pytest.raises(
        argparse.ArgumentError, match=r"expected a whole number, got 'many' \(the flag, or MASKFARM_RETRIES\)"
    ):
        argparse.ArgumentParser.parse_args(_no_exit(parser), ["uses-it"])


def _no_exit(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for sub in [parser, *parser._subparsers._group_actions[0].choices.values()]:  # type: ignore[union-attr]
        sub.exit_on_error = False

        def error(message: str, sub=sub):  # argparse's own error() exits: raise what it would report
            raise argparse.ArgumentError(None, message)

        sub.error = error  # type: ignore[method-assign]
    return parser


def test_help_names_each_variable_and_default() -> None:
    parser = argparse.ArgumentParser(prog="example")
    add_arguments(Example, parser)
    text = parser.format_help()
    for variable in ("MASKFARM_URL", "MASKFARM_RETRIES", "MASKFARM_LOUD=1", "MASKFARM_WHO_AM_I", "$MASKFARM_ROOTS"):
        assert variable in text
    assert "default 0644" in text and "default redis://x" in text


def test_only_the_names_asked_for() -> None:
    assert set(vars(parse([], ["retries", "loud"]))) == {"retries", "loud"}


@pytest.mark.parametrize("settings", [ServerSettings, WorkerSettings])
def test_server_and_worker_settings_are_all_flags(settings) -> None:
    """Both use the one pattern: every field is a flag, and the parsed defaults are the defaults."""
    parser = argparse.ArgumentParser()
    add_arguments(settings, parser)
    args = parser.parse_args([])
    assert set(vars(args)) == {field.name for field in dataclasses.fields(settings)}
    assert from_args(settings, args) == settings()


def test_the_model_options_are_the_workers() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(WorkerSettings, parser, MODEL_OPTIONS)
    assert set(vars(parser.parse_args([]))) == set(MODEL_OPTIONS)


def test_a_wrong_worker_setting_is_said_before_the_model_is_looked_for(tmp_path) -> None:
    missing = tmp_path / "no-model-here"
    argv = [sys.executable, "-m", "maskfarm.cli", "worker", "--codec-threads", "0", "--model", str(missing)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2, run.stderr
    assert "the codec threads must be at least 1, got 0" in run.stderr and str(missing) not in run.stderr


def test_frame_threads_are_at_least_one() -> None:
    assert WorkerSettings(frame_threads=2).frame_threads == 2
    with pytest.raises(ValueError, match="the frame threads must be at least 1, got 0"):
        WorkerSettings(frame_threads=0)


@pytest.mark.parametrize("level, hub_lines", [("INFO", False), ("DEBUG", True)])
def test_the_hubs_http_requests_are_logged_only_at_debug(level: str, hub_lines: bool) -> None:
    script = (
        "import logging; from maskfarm.worker.cli import configure_logging, HTTP_CLIENT_LOGGERS\n"
        f"configure_logging({level!r})\n"
        "for name in HTTP_CLIENT_LOGGERS: logging.getLogger(name).info('HTTP Request: GET %s', name)\n"
        "logging.getLogger('maskfarm.worker.runner').info('ours')\n"
        "logging.getLogger('httpx2').warning('a hub warning')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "ours" in run.stderr and "a hub warning" in run.stderr
    assert ("HTTP Request: GET" in run.stderr) is hub_lines, run.stderr
