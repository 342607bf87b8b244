"""A real HTTP server in front of a real InfluxDB: it passes every request through, except that `/query` can be made
to answer what a proxy, a half-compatible server or a broken one answers (an HTML page, JSON of another shape, a
refusal). Not a mock of a client library: the bridge talks HTTP to it as to any InfluxDB behind a proxy."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from posture.local_servers import InfluxDB1


class InfluxFront:
    """Listens on 127.0.0.1 (url); `query_answer` = (status, content type, body) answers every /query while set;
    `query_torn`: every /query is answered as by an InfluxDB killed mid-answer (a first chunk, then the connection
    closed)."""

    def __init__(self, influx: InfluxDB1) -> None:
        self.influx = influx
        self.query_answer: tuple[int, str, bytes] | None = None
        self.query_torn = False
        self.queries = 0  # /query requests answered (passed through or not)
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:  # the test's output is not the place
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/query"):
                    front.queries += 1
                    if front.query_torn:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                         b"Transfer-Encoding: chunked\r\n\r\n10\r\n{\"results\":[{\"st\r\n")
                        self.close_connection = True
                        return
                    if (answer := front.query_answer) is not None:
                        self._send(*answer)
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                request = urllib.request.Request(f"{front.influx.url}{self.path}", data=body or None,
                                                 headers=headers, method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=30) as reply:
                        self._send(reply.status, reply.headers.get("Content-Type", ""), reply.read(),
                                   reply.headers.get("X-Influxdb-Version"))
                except urllib.error.HTTPError as exc:
                    self._send(exc.code, exc.headers.get("Content-Type", ""), exc.read())

            def _send(self, status: int, content_type: str, body: bytes, version: str | None = None) -> None:
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                if version:
                    self.send_header("X-Influxdb-Version", version)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
