"""Joining or starting Ray for a batch: the --ray address, a quick check that a cluster answers, connect().

`ray` is imported only here and in distributed.py, and only when a Ray batch runs.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any, Dict, Optional

from ..errors import InputError

LOCAL_OBJECT_STORE = 256 * 2**20  # bytes; only small messages pass through it (paths, outcomes)
CONNECT_TIMEOUT_S = 5.0  # a cluster's head answers a TCP connection at once; no answer in 5 s is no cluster
ADDRESS_RULE = re.compile(r"^(local|auto|ray://[^\s/]+:\d+|[^\s/:]+:\d+)$")


def check_address(address: Optional[str]) -> Optional[str]:
    """None or "local" starts a Ray instance here; "auto", "ray://HOST:PORT" or "HOST:PORT" join one."""
    if address is not None and not ADDRESS_RULE.match(address):
        raise InputError(f"ray address {address!r} is not one of: local, auto, ray://HOST:PORT, HOST:PORT")
    return address


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'restyle[ray]'") from None
    return ray


def connect(address: Optional[str] = None, *, num_cpus: Optional[int] = None) -> bool:
    """Join or start Ray; True when this call started it (the caller then shuts it down).

    A process already connected to Ray (a notebook, a Ray job, the tests' cluster) keeps its connection.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    check_address(address)
    kw: Dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address in (None, "local"):
        kw.update(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE,
                  num_cpus=num_cpus)
        ray.init(**kw)
        return True
    kw["address"] = address
    if address != "auto":
        check_reachable(address)  # else ray.init retries for minutes, printing Ray's own warnings
    try:
        ray.init(**kw)
    except (ConnectionError, TimeoutError, RuntimeError) as e:  # "auto" with no cluster; a port that is not Ray's
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot reach a Ray cluster at {address} ({first})") from None
    return True


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """InputError within `timeout_s` unless a TCP connection to HOST:PORT (or ray://HOST:PORT) opens."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        why = (f"no answer within {timeout_s:g} s" if isinstance(e, TimeoutError)
               else getattr(e, "strerror", None) or str(e) or type(e).__name__)
        raise InputError(f"cannot reach a Ray cluster at {address} ({why})") from None
