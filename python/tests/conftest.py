"""Fixtures of the Python tests: Mooncake's HTTP metadata server and pairs of
peer processes (a target and an initiator, each a TransferEngine over
protocol "flagcx").

The tests run against the `mooncake` package importable by the Python that
runs pytest (scripts/mooncake.sh <checkout> --python builds one, installs it
into a venv and runs them there). Without it, every test is skipped.
"""

import importlib.util
import itertools
import os
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mooncake_peer import PeerProcess  # noqa: E402


def _find(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAVE_ENGINE = _find("mooncake.engine")
HAVE_HTTP_SERVER = _find("mooncake.http_metadata_server") and _find("aiohttp")
SKIP_REASON = (
    f"Mooncake's Python module (mooncake.engine) is not installed for {sys.executable}; "
    "build it with this project's adapter and install it into a venv with "
    "`scripts/mooncake.sh <mooncake-checkout> --python` (which then runs these tests)")


def pytest_collection_modifyitems(config, items):
    if HAVE_ENGINE:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        item.add_marker(skip)


def pytest_report_header(config):
    if not HAVE_ENGINE:
        return "mooncake.engine: not installed (every test skips)"
    spec = importlib.util.find_spec("mooncake.engine")
    line = f"mooncake.engine: {spec.origin}"
    try:
        from mooncake import _flagcx_build
        line += f" ({_flagcx_build.BUILD})"
    except ImportError:
        pass
    return line


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peer_env():
    env = dict(os.environ)
    # The peers' own (failed) calls must end well inside the tests' bounds;
    # Mooncake's binding enforces at least 5 s.
    env.setdefault("MC_TRANSFER_TIMEOUT", "20")
    # With a metadata server Mooncake publishes an RPC address it picks from
    # the machine's interfaces; loopback is the one every test machine has.
    env.setdefault("MC_TCP_BIND_ADDRESS", "127.0.0.1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@pytest.fixture(scope="session")
def http_metadata(tmp_path_factory):
    """Mooncake's HTTP metadata server (mooncake.http_metadata_server, as
    Mooncake's wheel ships it) on a free loopback port; its URL."""
    if not HAVE_HTTP_SERVER:
        pytest.skip("mooncake.http_metadata_server or aiohttp is not installed "
                    "(scripts/mooncake.sh --python installs both)")
    port = free_port()
    log = open(tmp_path_factory.mktemp("http") / "http-metadata.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mooncake.http_metadata_server",
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the HTTP metadata server did not start (log: {log.name})")
            time.sleep(0.05)  # polling a port; the deadline bounds it
    yield f"http://127.0.0.1:{port}/metadata"
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    log.close()


_names = itertools.count()


class Pair:
    """A target and an initiator process, initialized with the same
    metadata, each a TransferEngine over "flagcx"."""

    def __init__(self, directory, metadata, env=None):
        env = env or peer_env()
        n = next(_names)
        self.peers = []
        self.target = self._start(directory / f"target-{n}.log", env, "target")
        self.initiator = self._start(directory / f"initiator-{n}.log", env, "initiator")
        if metadata == "p2p":
            meta, tname, iname = "P2PHANDSHAKE", "127.0.0.1", "127.0.0.1"
        else:
            meta = metadata
            tname, iname = f"mcfx-target-{os.getpid()}-{n}", f"mcfx-initiator-{os.getpid()}-{n}"
        self.segment = self.target.call("init", metadata=meta, hostname=tname)["segment"]
        self.initiator.call("init", metadata=meta, hostname=iname)

    def _start(self, log, env, name):
        p = PeerProcess(sys.executable, str(log), env=env, name=name)
        self.peers.append(p)
        return p

    def quit(self):
        """Both processes destroy their engines and exit; their statuses."""
        return {p.name: p.quit() for p in self.peers}

    def close(self):
        for p in self.peers:
            p.close()


@pytest.fixture(params=["p2p", "http"])
def metadata(request):
    """"p2p" (P2PHANDSHAKE) or the HTTP metadata server's URL."""
    if request.param == "p2p":
        return "p2p"
    return request.getfixturevalue("http_metadata")


@pytest.fixture
def pair(metadata, tmp_path):
    """A fresh target + initiator; at the end both must exit with status 0."""
    p = Pair(tmp_path, metadata)
    try:
        yield p
        statuses = p.quit()
        assert statuses == {"target": 0, "initiator": 0}, (
            f"the peers did not exit cleanly: {statuses}\n"
            f"target log:\n{p.target.log_tail()}\ninitiator log:\n{p.initiator.log_tail()}")
    finally:
        p.close()
