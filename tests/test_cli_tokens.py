"""``mfa token ...``, run as operators run it."""

from __future__ import annotations

from sqlalchemy import func, select

from mfa.db import Database
from mfa.models import AuditEvent, Factor, HardwareToken

from .helpers import PASSWORD, VECTORS
from .test_cli import mfa

PSKC_DIR = VECTORS / "pskc"


def figure(n: int) -> str:
    (path,) = PSKC_DIR.glob(f"figure{n}_*.pskcxml")
    return str(path)


def count(env: dict[str, str], model: type) -> int:
    db = Database(env["MFA_DATABASE_URL"])
    with db.read() as s:
        n = s.execute(select(func.count()).select_from(model)).scalar_one()
    db.dispose()
    return int(n)


def test_import_prints_one_line_per_serial_and_names_the_skipped(env):
    r = mfa(env, "token", "import", figure(10))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "654321 imported (hotp, 8 digits)",
        "123456 imported (hotp, 8 digits)",
        "9999999 imported (hotp, 8 digits)",
        "9999999 skipped: given twice in the file (the first key was taken)",
    ]
    r = mfa(env, "token", "import", figure(7), "--password-stdin", stdin="qwerty\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["987654321 imported (hotp, 8 digits)"]
    r = mfa(env, "token", "import", figure(6), "--key-hex", "12345678901234567890123456789012")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["987654321 skipped: already present"]
    assert count(env, HardwareToken) == 4


def test_an_import_that_fails_is_one_line_on_stderr_and_imports_nothing(env):
    cases = [
        ([figure(4)], "no secret"),
        ([figure(8)], "RSA key"),
        ([figure(7), "--password", "wrong"], "wrong password"),
        ([figure(6), "--key-hex", "xyz"], "hex"),
        ([str(PSKC_DIR / "missing.pskcxml")], "cannot read"),
    ]
    for args, words in cases:
        r = mfa(env, "token", "import", *args)
        assert r.returncode == 1, (args, r.stdout)
        assert r.stdout == ""
        lines = r.stderr.splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("mfa: ")
        assert words in lines[0]
    assert count(env, HardwareToken) == 0
    assert count(env, AuditEvent) == 0


def test_dry_run_reads_the_file_and_imports_nothing(env):
    r = mfa(env, "token", "import", figure(9), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "0755225266 would be imported (hotp, 6 digits)",
        "note: the file's XML signature was not checked",
    ]
    assert count(env, HardwareToken) == 0


def test_csv_from_standard_input(env):
    seed = "3132333435363738393031323334353637383930"
    r = mfa(env, "token", "import", "-", stdin=f"T1, {seed}, totp, 6, 30\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["T1 imported (totp, 6 digits, 30 s)"]


def test_list_assign_unassign(env):
    assert mfa(env, "token", "import", figure(3)).returncode == 0
    assert (
        mfa(env, "user", "add", "dora", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    )
    r = mfa(env, "token", "list")
    assert r.stdout.splitlines() == ["987654321\thotp\t-"]

    r = mfa(env, "token", "assign", "987654321", "dora")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("987654321 assigned to dora")
    assert mfa(env, "token", "list").stdout.splitlines() == ["987654321\thotp\tdora"]
    assert count(env, Factor) == 1
    r = mfa(env, "token", "assign", "987654321", "dora")
    assert r.returncode == 1
    assert "assigned already" in r.stderr

    r = mfa(env, "token", "unassign", "987654321")
    assert r.returncode == 0, r.stderr
    assert mfa(env, "token", "list").stdout.splitlines() == ["987654321\thotp\t-"]
    assert count(env, Factor) == 0
    r = mfa(env, "token", "unassign", "987654321")
    assert r.returncode == 1
    assert "not assigned" in r.stderr

    r = mfa(env, "token", "assign", "nope", "dora")
    assert r.returncode == 1
    assert "No such hardware token" in r.stderr
