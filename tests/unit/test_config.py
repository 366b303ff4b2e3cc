"""Configuration errors name the file, the key and what is wrong."""

from __future__ import annotations

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config

MINIMAL = """
[gateways.echo]
jid = "echo.example.org"
secret = "s3cret"
"""


def write(tmp_path, text):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def error_for(tmp_path, text) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value


def test_minimal_config_has_defaults(tmp_path):
    """A gateway table with jid and secret is enough; the rest has defaults."""
    config = load_config(write(tmp_path, MINIMAL))
    [gateway] = config.gateways
    assert (gateway.plugin, gateway.jid, gateway.server.port) == ("echo", "echo.example.org", 5347)
    assert gateway.max_backoff == 60.0
    assert (gateway.archive.enabled, gateway.archive.max_age_days, gateway.archive.history_length) == (
        True, 90, 20)
    assert config.database.url.startswith("sqlite:///")


@pytest.mark.parametrize(("text", "key", "problem"), [
    (MINIMAL + "max_backoff = 'soon'\n", "gateways.echo.max_backoff", "expected a number, got str 'soon'"),
    (MINIMAL + "[gateways.echo.server]\nport = 70000\n", "gateways.echo.server.port", "between 1 and 65535"),
    ("[gateways.echo]\nsecret = 'x'\n", "gateways.echo.jid", "is required"),
    ("[gateways.echo]\njid = 'a@echo.example.org'\nsecret = 'x'\n", "gateways.echo.jid", "bare domain"),
    (MINIMAL + "colour = 'blue'\n", "gateways.echo.colour", "unknown key"),
    ("[logging]\nlevel = 'loud'\n" + MINIMAL, "logging.level", "must be one of"),
    ("[database]\nurl = 'mysql://x'\n" + MINIMAL, "database.url", "not supported"),
    (MINIMAL + "allowed_users = ['a b']\n", "gateways.echo.allowed_users", "not a domain"),
    (MINIMAL + "[gateways.echo.archive]\nenabled = 'yes'\n", "gateways.echo.archive.enabled", "true or false"),
    (MINIMAL + "[gateways.echo.archive]\nmax_age_days = -1\n", "gateways.echo.archive.max_age_days",
     "0 or more"),
    (MINIMAL + "[gateways.echo.archive]\nhistory_length = 2.5\n", "gateways.echo.archive.history_length",
     "expected an integer"),
    (MINIMAL + "[gateways.echo.archive]\nbatch_size = 0\n", "gateways.echo.archive.batch_size",
     "between 1 and 10000"),
    (MINIMAL + "[gateways.echo.archive]\nflush_interval = 0\n", "gateways.echo.archive.flush_interval",
     "greater than 0"),
    (MINIMAL + "[gateways.echo.archive]\nkeep = true\n", "gateways.echo.archive.keep", "unknown key"),
    ("", "gateways", "at least one"),
])
def test_errors_name_key_and_problem(tmp_path, text, key, problem):
    """Each mistake is reported with its dotted key and a description of the problem."""
    error = error_for(tmp_path, text)
    assert error.key == key
    assert problem in error.problem
    assert str(error).startswith(str(tmp_path / "gateway.toml"))


def test_invalid_toml_names_the_file_and_position(tmp_path):
    """A syntax error says which file and where."""
    error = error_for(tmp_path, "[gateways.echo\n")
    assert "invalid TOML" in str(error) and "line 1" in str(error)


def test_secret_from_environment(tmp_path, monkeypatch):
    """secret_env reads the secret from the environment; a missing variable is named."""
    text = "[gateways.echo]\njid = 'echo.example.org'\nsecret_env = 'XGW_TEST_SECRET'\n"
    monkeypatch.delenv("XGW_TEST_SECRET", raising=False)
    error = error_for(tmp_path, text)
    assert error.key == "gateways.echo.secret_env" and "XGW_TEST_SECRET" in error.problem
    monkeypatch.setenv("XGW_TEST_SECRET", "from-env")
    assert load_config(write(tmp_path, text)).gateways[0].secret == "from-env"


def test_secrets_are_not_in_repr(tmp_path):
    """Secrets never show up when a config object is printed or logged."""
    config = load_config(write(tmp_path, MINIMAL + "\n[security]\ncredentials_key = 'k'*1\n"
                                            .replace("'k'*1", "'verysecretkey'")))
    assert "s3cret" not in repr(config) and "verysecretkey" not in repr(config)


def test_check_config_command(tmp_path, capsys):
    """check-config prints OK for a good file and the key and problem for a bad one (exit 2)."""
    good = write(tmp_path, MINIMAL)
    assert main(["check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = write(tmp_path, MINIMAL.replace('"echo.example.org"', "42"))
    assert main(["check-config", str(bad)]) == 2
    assert "gateways.echo.jid: expected a string, got int 42" in capsys.readouterr().err


def test_check_config_names_a_missing_plugin(tmp_path, capsys):
    """A plugin that is not installed is reported against its key."""
    path = write(tmp_path, MINIMAL + "plugin = 'nosuch'\n")
    assert main(["check-config", str(path)]) == 2
    assert "gateways.echo.plugin: no plugin named 'nosuch'" in capsys.readouterr().err


def test_check_config_validates_plugin_options(tmp_path, capsys):
    """Plugin options are checked too, and the error names the options table and the key."""
    path = write(tmp_path, MINIMAL.replace('"echo.example.org"', '"irc.example.org"')
                 + "plugin = 'irc'\n[gateways.echo.options]\nthrottle_burst = 'lots'\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "gateways.echo.options: throttle_burst: expected a number" in err
