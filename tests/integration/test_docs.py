"""The README stays true: its settings table is the binary's own, and the
scripts it names exist."""
import os
import re
import subprocess

from conftest import BIN, REPO


def readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_settings_table_matches_the_binary():
    out = subprocess.run([BIN, "settings", "--markdown"], capture_output=True, text=True,
                         check=True).stdout.strip()
    text = readme()
    block = text.split("<!-- settings:begin -->")[1].split("<!-- settings:end -->")[0].strip()
    assert block == out, "README settings table differs: paste `ordersync settings --markdown`"


def test_help_lists_every_setting():
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True, check=True).stdout
    for name in re.findall(r"^\| `([A-Z_]+)`", readme(), re.M):
        assert name in out


def test_named_scripts_exist():
    for name in set(re.findall(r"scripts/([a-z][a-z-]+)", readme())):
        assert os.access(os.path.join(REPO, "scripts", name), os.X_OK) or \
            os.path.exists(os.path.join(REPO, "scripts", name + ".sql")), name


def test_readme_stands_alone():
    """Readers have the repository, not the team's other folders: no path may leave it."""
    text = readme()
    assert not re.findall(r"\.\./[\w.-]+", text)
    assert "/work/" not in text
