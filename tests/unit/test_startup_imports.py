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


def test_the_store_process_loaded_asyncio() -> None:
    """The store process (python -m sapd.store.process) runs sapd.store's __init__,
    which imported the daemon-side writer and its asyncio: ~7 MB of its RSS."""
    code = ("import sys, sapd.store.process\n"
            "assert 'asyncio' not in sys.modules and 'sapd.store.writer' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
