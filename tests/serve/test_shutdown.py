"""SIGTERM during a burst: the server stops accepting, answers what it holds, exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
from PIL import Image
from tests.serve.conftest import encode, start_server


def test_sigterm_during_a_burst_loses_no_answered_request(trained, tmp_path: Path) -> None:
    run, _ = trained
    # A long batching wait keeps the burst inside the server when the signal arrives.
    server = start_server([str(run), "--max-wait-ms", "1500", "--max-batch-size", "64"],
                          tmp_path / "serve.log")
    png = encode(Image.new("RGB", (16, 16), "white"))

    async def scenario() -> tuple[list[httpx.Response | BaseException], BaseException | None]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     limits=httpx.Limits(max_connections=32)) as client:
            burst = [asyncio.create_task(client.post("/predict", content=png))
                     for _ in range(24)]
            await asyncio.sleep(0.4)  # every request is sent and waits in the batcher
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            refused = None
            try:
                async with httpx.AsyncClient(timeout=2) as late:
                    await late.get(server.url + "/health")
            except httpx.TransportError as exc:
                refused = exc
            return await asyncio.gather(*burst, return_exceptions=True), refused

    try:
        answers, refused = asyncio.run(scenario())
        code = server.proc.wait(timeout=30)
    finally:
        server.stop()
    log = server.log.read_text()
    assert code == 0, log
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    assert [a.status_code for a in answers] == [200] * 24
    assert all(a.json()["predictions"][0]["label"] for a in answers)
    assert isinstance(refused, httpx.ConnectError), "a new connection was accepted"
    assert "Shutting down" in log and "Finished server process" in log
