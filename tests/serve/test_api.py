"""The HTTP API of a real ``cnnkit serve`` process: answers, limits, errors and the key."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.serve.conftest import API_KEY, Server, encode

from cnnkit.cli import main


def _images(data: Path, n: int) -> list[Path]:
    return sorted(data.rglob("*.png"))[:n]


def test_predictions_equal_cnnkit_predicts(served: Server, trained, capsys) -> None:
    run, data = trained
    files = _images(data, 5)
    assert main(["predict", str(run), *map(str, files), "--format", "json", "-k", "3",
                 "--device", "cpu"]) == 0
    expected = json.loads(capsys.readouterr().out)
    with served.client() as client:
        multi = client.post("/v1/models/shapes/predict", data={"top_k": "3"},
                            files=[("file", (f.name, f.read_bytes(), "image/png"))
                                   for f in files])
        raw = client.post("/predict", content=files[0].read_bytes(),
                          headers={"Content-Type": "image/png"})
    assert multi.status_code == 200, multi.text
    got = multi.json()["predictions"]
    assert [p["filename"] for p in got] == [f.name for f in files]
    for want, have in zip(expected, got):
        assert [t["label"] for t in have["top"]] == [t["label"] for t in want["top"]]
        assert np.allclose([t["probability"] for t in have["top"]],
                           [t["probability"] for t in want["top"]], atol=1e-5)
    assert raw.status_code == 200
    assert raw.json()["predictions"][0]["label"] == expected[0]["label"]
    assert len(raw.json()["predictions"][0]["top"]) == 3  # the server's --top-k


def test_models_health_ready_and_openapi(served: Server) -> None:
    with served.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json()["status"] == "ready"
        listed = client.get("/v1/models").json()["models"]
        one = client.get("/v1/models/shapes").json()
        assert client.get("/openapi.json").json()["paths"]["/v1/models/{name}/predict"]
        docs = client.get("/docs").text
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+\.(?:js|css))""", docs)
        assert assets and all(a.startswith("/") for a in assets)  # served here, no CDN
        assert all(client.get(a).status_code == 200 for a in assets)
        missing = client.get("/v1/models/cats")
    assert [m["name"] for m in listed] == ["shapes"]
    assert one["classes"] == ["circle", "square", "triangle"]
    assert one["input"]["img_size"] == 16 and one["preprocessing"]["mean"]
    assert one["architecture"]["name"] and one["cnnkit_version"]
    assert missing.status_code == 404 and "shapes" in missing.json()["detail"]


def test_the_key_guards_every_route_but_health(served: Server) -> None:
    png = encode(Image.new("RGB", (16, 16)))
    assert httpx.get(served.url + "/health").status_code == 200
    for method, path in (("GET", "/v1/models"), ("GET", "/ready"), ("POST", "/predict"),
                         ("GET", "/openapi.json")):
        r = httpx.request(method, served.url + path, content=png if method == "POST" else None)
        assert r.status_code == 401, path
        assert "Bearer" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(served.url + "/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.get(served.url + "/v1/models",
                      headers={"Authorization": f"Bearer {API_KEY}"})
    assert right.status_code == 200


def _still_serves(client: httpx.Client) -> None:
    ok = client.post("/predict", content=encode(Image.new("RGB", (20, 20), "white")))
    assert ok.status_code == 200, ok.text


def test_too_large_unsupported_and_damaged_requests(served: Server) -> None:
    rng = np.random.default_rng(0)
    big = encode(Image.fromarray(rng.integers(0, 255, (800, 800, 3), dtype=np.uint8)))
    assert len(big) > 2**20  # over the server's 1 MiB
    with served.client() as client:
        r = client.post("/predict", content=big, headers={"Content-Type": "image/png"})
        assert r.status_code == 413 and "--max-request-mb" in r.json()["detail"]
        _still_serves(client)
        gif = encode(Image.new("RGB", (16, 16)), "GIF")
        for body, ctype in ((b"%PDF-1.4 not an image", "application/octet-stream"),
                            (gif, "image/gif")):
            r = client.post("/predict", content=body, headers={"Content-Type": ctype})
            assert r.status_code == 415 and "allowed format" in r.json()["detail"]
        r = client.post("/predict", content=b"{}", headers={"Content-Type": "application/json"})
        assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
        png = encode(Image.new("RGB", (16, 16)))
        r = client.post("/predict", files=[("file", (f"{i}.png", png, "image/png"))
                                           for i in range(7)])
        assert r.status_code == 413 and "At most 6 images" in r.json()["detail"]
        noisy = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
        r = client.post("/predict", content=noisy[: len(noisy) // 2])
        assert r.status_code == 400 and "truncated" in r.json()["detail"]
        r = client.post("/predict?top_k=zero", content=png)
        assert r.status_code == 422 and "top_k" in r.json()["detail"]
        _still_serves(client)


def _bomb_header(side: int) -> bytes:
    """A PNG that declares ``side`` x ``side`` pixels but carries almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_without_memory_growth(served: Server) -> None:
    bomb = _bomb_header(30000)  # 900 million pixels: 2.7 GB if it were decoded
    with served.client() as client:
        _still_serves(client)
        before = served.rss_kib()
        r = client.post("/predict", files=[("file", ("bomb.png", bomb, "image/png"))])
        after = served.rss_kib()
        assert r.status_code == 413, r.text
        assert "bomb.png" in r.json()["detail"] and "pixels" in r.json()["detail"]
        _still_serves(client)
    assert after - before < 50 * 1024, (before, after)


def test_a_full_queue_answers_503_with_retry_after_and_recovers(served: Server) -> None:
    png = encode(Image.new("RGB", (16, 16), "black"))

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=24)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=served.url, limits=limits, headers=headers,
                                     timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", content=png)
                                          for _ in range(24)))

    answers = asyncio.run(burst())
    codes = [r.status_code for r in answers]
    assert set(codes) == {200, 503}, codes
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "retry" in busy.json()["detail"]
    with served.client() as client:
        _still_serves(client)


@pytest.mark.parametrize("path", ["/predict", "/v1/models/shapes/predict"])
def test_an_empty_request_says_what_to_send(served: Server, path: str) -> None:
    with served.client() as client:
        r = client.post(path, content=b"")
        form = client.post(path, data={"top_k": "2"}, files={})
    assert r.status_code == 400 and "raw bytes" in r.json()["detail"]
    assert form.status_code in (400, 415)
