"""Hotkeys and coldkeys in Bittensor's wallet layout, through the ``bittensor`` SDK.

A wallet is named ``NAME/HOTKEY`` as ``btcli`` names it, and lives under
``~/.bittensor/wallets`` unless a folder is given, so operators reuse the keys
they already have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bittensor as bt

from engram.errors import ChainError, InvalidRequestError


@dataclass(frozen=True)
class Identity:
    """The two public addresses Engram needs from a wallet."""

    name: str
    hotkey_name: str
    hotkey: str  # ss58
    coldkey: str  # ss58


def _split(spec: str) -> tuple[str, str]:
    name, _, hotkey = spec.partition("/")
    if not name or "/" in hotkey:
        raise InvalidRequestError(f"wallet {spec!r} must be NAME or NAME/HOTKEY")
    return name, hotkey or "default"


def open_wallet(spec: str, path: Path) -> bt.Wallet:
    """The wallet ``spec`` (``NAME/HOTKEY``) under ``path``; its hotkey must exist."""
    name, hotkey = _split(spec)
    wallet = bt.Wallet(name, hotkey, path=str(path))
    if not wallet.hotkey_file.exists_on_device():
        raise ChainError(
            f"no hotkey {name}/{hotkey} under {path}; create it with "
            f"`engram wallet new --name {name} --hotkey {hotkey}`"
        )
    return wallet


def identity(wallet: bt.Wallet) -> Identity:
    coldkey = wallet.coldkeypub.ss58_address if wallet.coldkeypub_file.exists_on_device() else ""
    return Identity(wallet.name, wallet.hotkey_str, wallet.hotkey.ss58_address, coldkey)


def new_wallet(
    spec: str, path: Path, *, overwrite: bool = False, password: str | None = None
) -> tuple[bt.Wallet, dict[str, str]]:
    """Create the coldkey (if the wallet has none) and the hotkey; returns the new mnemonics.

    The coldkey is encrypted when ``password`` is given. The hotkey is never
    encrypted: miners and validators sign with it unattended.
    """
    name, hotkey = _split(spec)
    wallet = bt.Wallet(name, hotkey, path=str(path))
    if wallet.hotkey_file.exists_on_device() and not overwrite:
        raise ChainError(f"hotkey {name}/{hotkey} already exists under {path}")
    mnemonics: dict[str, str] = {}
    if overwrite or not wallet.coldkeypub_file.exists_on_device():
        wallet.create_new_coldkey(
            use_password=password is not None,
            coldkey_password=password,
            overwrite=overwrite,
            on_mnemonic=lambda m: mnemonics.__setitem__("coldkey", m),
        )
    wallet.create_new_hotkey(
        overwrite=overwrite, on_mnemonic=lambda m: mnemonics.__setitem__("hotkey", m)
    )
    return wallet, mnemonics


def ensure_wallet(spec: str, path: Path) -> bt.Wallet:
    """The wallet, created without a password when it does not exist (localnet, tests)."""
    name, hotkey = _split(spec)
    wallet = bt.Wallet(name, hotkey, path=str(path))
    if wallet.hotkey_file.exists_on_device():
        return wallet
    return new_wallet(spec, path)[0]
