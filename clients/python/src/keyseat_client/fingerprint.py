"""A stable, privacy-preserving device fingerprint: the operating system's
machine id, hashed with SHA-256 under an application-chosen salt, so the
server never sees a raw hardware id and two vendors' apps on one machine
produce unrelated fingerprints. Same value as the Rust client's
``machine_fingerprint`` for the same ``app``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import Optional

__all__ = ["machine_fingerprint"]


def machine_fingerprint(app: str) -> Optional[str]:
    """The fingerprint of this machine for an application (``app`` is any
    stable string of the vendor's, e.g. ``"com.example.solver"``), or
    ``None`` if the system offers no machine id. 32 hex characters."""
    machine = _machine_id()
    if machine is None:
        return None
    return _hash(app, machine)


def _hash(app: str, machine_id: str) -> str:
    data = f"keyseat-fingerprint-v1\0{app}\0{machine_id}".encode("utf-8")
    return hashlib.sha256(data).digest()[:16].hex()


def _machine_id() -> Optional[str]:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text:
            return text
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        for line in out.splitlines():
            if "IOPlatformUUID" in line:
                parts = line.split('"')
                return parts[3] if len(parts) > 3 else None
        return None
    if sys.platform == "win32":
        try:
            import winreg

            with winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE,
                r"SOFTWARE\Microsoft\Cryptography",
                0,
                winreg.KEY_READ | getattr(winreg, "KEY_WOW64_64KEY", 0),
            ) as k:
                value, _ = winreg.QueryValueEx(k, "MachineGuid")
                return str(value) or None
        except OSError:
            return None
    return None
