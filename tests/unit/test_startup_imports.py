"""What a plain sapd loads at start-up: what it never uses costs restart time and memory."""

from __future__ import annotations

import subprocess
import sys


def test_a_daemon_without_signing_loaded_cryptography() -> None:
    """cryptography and asn1crypto cost ~100 ms and ~15 MB at start-up, for signing and
    trust policies only: they load on first use (sapd.signing), and still work then."""
    code = ("import sys, sapd.daemon\n"
            "heavy = [m for m in ('cryptography.hazmat.bindings._rust', 'asn1crypto.core')"
            " if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from sapd import signing\n"
            "assert signing.x509.load_pem_x509_certificate\n"
            "assert 'cryptography.hazmat.bindings._rust' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
