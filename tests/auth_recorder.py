#!/usr/bin/env python3
"""A stand-in Mender server for the client tests: an HTTPS server on 127.0.0.1 that records every
request and rejects device authentication with 401, so `mender bootstrap` sends one auth request
and exits.

It binds an ephemeral port and prints the port number as the first line on stdout. Each request is
appended as one JSON object per line to OUT/requests.jsonl before the response is sent, with the
fields method, path, headers (an object) and body (the request body as a string). The process
exits by itself after --lifetime seconds, so it cannot outlive a test that died without stopping
it.
"""

import argparse
import http.server
import json
import os
import signal
import ssl
import sys

AUTH_PATH = "/api/devices/v1/authentication/auth_requests"


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Appends each request to the log, then responds with 401 to auth requests and 404 to others."""

    protocol_version = "HTTP/1.1"
    log_path = ""

    def do_POST(self):
        self.record_and_reject()

    def do_GET(self):
        self.record_and_reject()

    def do_PUT(self):
        self.record_and_reject()

    def do_PATCH(self):
        self.record_and_reject()

    def record_and_reject(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {name: value for name, value in self.headers.items()},
            "body": body.decode("utf-8", errors="surrogateescape"),
        }
        line = json.dumps(entry, ensure_ascii=True) + "\n"
        with open(self.log_path, "a", encoding="ascii") as log:
            log.write(line)
            log.flush()
            os.fsync(log.fileno())

        if self.path == AUTH_PATH:
            self.send_json(401, {"error": "device not preauthorized by this test server"})
        else:
            self.send_json(404, {"error": "not found"})

    def send_json(self, status, payload):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def log_message(self, format, *args):
        sys.stderr.write("auth_recorder: " + (format % args) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="private key of the certificate (PEM)")
    parser.add_argument("--out", required=True, help="directory for requests.jsonl")
    parser.add_argument("--lifetime", type=int, default=120, help="seconds before the server exits")
    args = parser.parse_args()

    # SIGALRM's default action ends the process, whatever the server is doing.
    signal.alarm(args.lifetime)

    RecordingHandler.log_path = os.path.join(args.out, "requests.jsonl")
    server = http.server.HTTPServer(("127.0.0.1", 0), RecordingHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)

    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
