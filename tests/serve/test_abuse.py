"""A real ``cnnkit serve`` under hostile clients: bombs by aspect ratio, huge headers, slow
clients, foreign Host headers (DNS rebinding). The load figures are measured by
benchmarks/serve_abuse.py; these are its key checks, small and fast."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from tests.serve.conftest import API_KEY, Server, encode, start_server

from cnnkit.base.errors import CnnkitError
from cnnkit.serve.hardening import HttpLimits, trusted_hosts
from cnnkit.serve.protocol import GRACE_S, LINGER_S

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 16


@pytest.fixture(scope="module")
def guarded(trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a short header deadline, a small connection cap and one extra name."""
    run, _ = trained
    log = tmp_path_factory.mktemp("abuse") / "serve.log"
    server = start_server([str(run), "--header-timeout", str(HEADER_TIMEOUT_S),
                           "--body-timeout", str(BODY_TIMEOUT_S),
                           "--max-connections", str(MAX_CONNECTIONS),
                           "--allowed-host", "shapes.internal"], log)
    yield server
    assert server.stop() == 0, log.read_text()


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _raw(server: Server, data: bytes, chunk: int = 1 << 16) -> bytes:
    """Send ``data`` over a fresh connection (in chunks, as a client streams it), then read
    the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        try:
            for i in range(0, len(data), chunk):
                sock.sendall(data[i:i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest
        answer = b""
        try:
            while part := sock.recv(65536):
                answer += part
        except ConnectionResetError:
            pass
        return answer


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_a_bomb_by_aspect_ratio_gets_413_before_any_pixel(served: Server) -> None:
    buf = io.BytesIO()
    Image.new("L", (1, 100_000)).save(buf, "PNG")  # 277 bytes; 3.2 Mpx once resized to 32
    with served.client() as client:
        before = served.rss_kib()
        r = client.post("/predict", files=[("file", ("long.png", buf.getvalue(), "image/png"))])
        after = served.rss_kib()
        assert r.status_code == 413, r.text
        assert "long.png" in r.json()["detail"] and "too elongated" in r.json()["detail"]
        ok = client.post("/predict", content=encode(Image.new("RGB", (16, 16))))
        assert ok.status_code == 200
    assert after - before < 20 * 1024, (before, after)


def test_headers_past_the_limit_get_431_however_they_arrive(guarded: Server) -> None:
    def get(header_bytes: int) -> bytes:
        return (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * header_bytes
                + b"\r\n\r\n")

    assert _status(_raw(guarded, get(15_000) + b"GET")) == 200  # under 16 KiB
    streamed = _raw(guarded, get(4 << 20), chunk=8192)  # 4 MiB in small pieces
    at_once = _raw(guarded, get(40_000), chunk=1 << 20)  # one read, past h11's own check
    for answer in (streamed, at_once):
        assert _status(answer) == 431, answer[:200]
        assert b"larger than this server accepts (16 KiB)" in answer
    assert httpx.get(guarded.url + "/health").status_code == 200


def _trickle(server: Server, stop: threading.Event, sockets: list[socket.socket],
             count: int) -> None:
    """``count`` slow clients: each sends one header byte at a time, and reconnects when
    the server closes it; they stay connected when ``stop`` is set."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=5)
        sock.sendall(request[:1])
        return sock

    sockets += [connect() for _ in range(count)]
    sent = 1
    while not stop.wait(0.2):
        for i, sock in enumerate(sockets):
            try:
                sock.sendall(request[sent % 10:sent % 10 + 1])
            except OSError:
                sock.close()
                sockets[i] = connect()
        sent += 1


def _open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_slow_clients_cannot_crowd_out_others(guarded: Server) -> None:
    idle = _open_files(guarded.pid)
    stop, sockets = threading.Event(), []
    trickler = threading.Thread(target=_trickle, args=(guarded, stop, sockets,
                                                       4 * MAX_CONNECTIONS), daemon=True)
    trickler.start()
    try:
        time.sleep(0.5)
        codes = []
        deadline = time.monotonic() + 3 * HEADER_TIMEOUT_S
        while time.monotonic() < deadline:  # past the header deadline of the first wave
            codes.append(httpx.get(guarded.url + "/health", timeout=5).status_code)
            time.sleep(0.1)
        stop.set()
        trickler.join()
        time.sleep(0.3)  # past the grace of the newest slow clients
        codes.append(httpx.get(guarded.url + "/health", timeout=5).status_code)
        held = _open_files(guarded.pid)  # 64 slow clients still connected on their side
        time.sleep(HEADER_TIMEOUT_S + LINGER_S + 0.5)  # 408, then the lingering close
        left = _open_files(guarded.pid)
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
    assert codes and set(codes) == {200}, codes
    assert held <= idle + MAX_CONNECTIONS, (idle, held)  # the cap holds
    assert left <= idle + 1, (idle, left)  # and the header deadline closes the rest
    log = guarded.log.read_text()
    assert "Traceback" not in log and "Too many open files" not in log


def test_an_evicted_slow_client_is_told_503(guarded: Server) -> None:
    port = _port(guarded)
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    first.sendall(b"GET /hea")  # the oldest partial request: closed first
    time.sleep(2 * GRACE_S)  # older than a request just begun
    others = [socket.create_connection(("127.0.0.1", port), timeout=5)
              for _ in range(MAX_CONNECTIONS)]
    try:
        answer = first.recv(4096)
        assert _status(answer) == 503 and b"retry-after: 1" in answer.lower()
        assert b"too many connections" in answer
        assert httpx.get(guarded.url + "/health").status_code == 200
    finally:
        for sock in [first, *others]:
            sock.close()


def test_a_slow_client_gets_408_after_the_header_deadline(guarded: Server) -> None:
    with socket.create_connection(("127.0.0.1", _port(guarded)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line yet
        start = time.monotonic()
        answer = sock.recv(4096)
        waited = time.monotonic() - start
    assert _status(answer) == 408 and b"within 1 s" in answer
    assert HEADER_TIMEOUT_S * 0.8 < waited < HEADER_TIMEOUT_S + 5


def test_a_body_that_stops_arriving_gets_408_and_the_server_goes_on(guarded: Server) -> None:
    image = encode(Image.new("RGB", (16, 16)))
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: " + str(len(image)).encode() + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", _port(guarded)), timeout=10) as sock:
        sock.sendall(head + image[:10])  # then nothing more
        start = time.monotonic()
        answer = sock.recv(4096)
        waited = time.monotonic() - start
    assert _status(answer) == 408 and b"paused for more than 1 s" in answer, answer[:200]
    assert BODY_TIMEOUT_S * 0.8 < waited < BODY_TIMEOUT_S + 5
    # a body that keeps coming, slower than the pause allows in all but under it each time
    with socket.create_connection(("127.0.0.1", _port(guarded)), timeout=10) as sock:
        sock.sendall(head)
        for i in range(0, len(image), len(image) // 3 + 1):
            time.sleep(BODY_TIMEOUT_S * 0.5)
            sock.sendall(image[i:i + len(image) // 3 + 1])
        assert _status(sock.recv(4096)) == 200
    assert httpx.get(guarded.url + "/health").status_code == 200


def test_a_foreign_host_header_is_refused(served: Server) -> None:
    port = _port(served)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    r = httpx.get(served.url + "/v1/models", headers={"Host": "evil.example", **auth})
    assert r.status_code == 400
    assert "'evil.example'" in r.json()["detail"] and "--allowed-host" in r.json()["detail"]
    assert httpx.get(served.url + "/health", headers={"Host": "evil.example"}
                     ).status_code == 400  # public routes too: a rebound page reads nothing
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert httpx.get(served.url + "/v1/models", headers={"Host": host, **auth}
                         ).status_code == 200, host


def test_allowed_host_adds_a_name(guarded: Server) -> None:
    assert httpx.get(guarded.url + "/v1/models", headers={"Host": "shapes.internal"}
                     ).status_code == 200
    assert httpx.get(guarded.url + "/v1/models", headers={"Host": "other.internal"}
                     ).status_code == 400


def test_trusted_hosts_follow_the_bind_address() -> None:
    assert trusted_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert trusted_hosts("::1") == ["[::1]", "127.0.0.1", "localhost"]
    assert trusted_hosts("192.0.2.7", ["Cats.Example"]) == ["192.0.2.7", "cats.example"]
    every = trusted_hosts("0.0.0.0")
    assert {"127.0.0.1", "localhost", socket.gethostname().lower()} <= set(every)
    with pytest.raises(CnnkitError, match=r"--allowed-host takes a host name.*'ev\*l'"):
        HttpLimits(allowed_hosts=("ev*l",))


def test_the_cap_fits_the_open_file_limit(tmp_path: Path) -> None:
    import resource
    import subprocess
    import sys

    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
            "from cnnkit.serve.hardening import connection_cap; print(connection_cap(1000, 16))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert 20 < int(out) <= 256 - 64 - 4 * 16  # room for accepts in flight and open files
    assert resource.getrlimit(resource.RLIMIT_NOFILE)  # this process's limit is untouched
