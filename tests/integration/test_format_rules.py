"""scripts/format --check rejects what reviews kept finding, naming file:line
and the rule: a query result read by column number, a switch on a source
kind, a C file under services/ or lib/ over 800 lines. Each case runs the
real script in a throwaway git repository holding one offending file."""
import os
import shutil
import subprocess

from conftest import REPO

CLEAN = """/* clean: reads by name. */
#include <libpq-fe.h>

const char *first_id(const PGresult *res, int col)
{
    return PQgetvalue(res, 0, col);
}
"""


def check(tmp_path, files):
    """Runs scripts/format --check over `files` ({path: text}); returns (exit code, output)."""
    os.makedirs(tmp_path / "scripts")
    shutil.copy(os.path.join(REPO, "scripts", "format"), tmp_path / "scripts" / "format")
    shutil.copy(os.path.join(REPO, ".clang-format"), tmp_path / ".clang-format")
    for path, text in files.items():
        os.makedirs((tmp_path / path).parent, exist_ok=True)
        (tmp_path / path).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    p = subprocess.run([str(tmp_path / "scripts" / "format"), "--check"], cwd=tmp_path,
                       capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def test_clean_code_passes(tmp_path):
    assert check(tmp_path, {"lib/clean.c": CLEAN}) == (0, "")


def test_a_column_read_by_number_is_refused(tmp_path):
    code = CLEAN + """
int is_null(const PGresult *res, int row)
{
    return PQgetisnull(res, row, 2);
}

const char *first(const PGresult *result_with_a_long_name, int the_row_of_the_result_we_want_now)
{
    return PQgetvalue(result_with_a_long_name, the_row_of_the_result_we_want_now + 1000000000000,
                      0);
}
"""
    rc, out = check(tmp_path, {"services/x/store.c": code})
    assert rc == 1
    assert out.splitlines() == [
        "services/x/store.c:11: column-number: PQgetisnull reads column 2 by number;"
        " resolve it by name once (db_columns)",
        "services/x/store.c:16: column-number: PQgetvalue reads column 0 by number;"
        " resolve it by name once (db_columns)",
    ]


def test_a_switch_on_a_source_kind_is_refused(tmp_path):
    code = """/* a switch on the kind. */
enum source_kind { SOURCE_SHOPIFY, SOURCE_STRIPE };

int port_of(enum source_kind k)
{
    switch (k) {
    case SOURCE_SHOPIFY:
        return 1;
    default:
        return 2;
    }
}
"""
    rc, out = check(tmp_path, {"tests/fuzz/fuzz_x.c": code})
    assert rc == 1
    assert out.splitlines() == [
        "tests/fuzz/fuzz_x.c:7: kind-switch: case SOURCE_SHOPIFY switches on a source kind;"
        " use the kind's table entry"]


def test_a_long_file_under_services_or_lib_is_refused(tmp_path):
    body = "/* long. */\n" + "".join(f"int v{i} = {i};\n" for i in range(800))
    rc, out = check(tmp_path, {"lib/long.c": body, "tests/unit/long_test.c": body,
                               "lib/short.c": body.replace("int v799 = 799;\n", "")})
    assert rc == 1
    assert out.splitlines() == ["lib/long.c:801: file-size: 801 lines, over 800; split it by concern"]


def test_an_unformatted_file_is_named(tmp_path):
    assert check(tmp_path, {"lib/clean.c": CLEAN}) == (0, "")
    (tmp_path / "lib" / "ugly.c").write_text("int  x ;\n")
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    p = subprocess.run([str(tmp_path / "scripts" / "format"), "--check"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stdout == "not formatted: lib/ugly.c (run scripts/format)\n"
