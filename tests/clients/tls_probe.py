"""One kept-open TLS connection to skiff, driven line by line; run by tests/tls.rs.

    python tls_probe.py PORT CA_FILE

Commands on stdin, one answer line each on stdout, "STATUS CERT_SHA256":
  get  GET /v2/ on the connection opened at start (kept alive)
  new  GET /v2/ on a fresh connection, then close it
CERT_SHA256 is the hash of the server certificate that connection saw.
"""

import hashlib
import http.client
import ssl
import sys

port, ca = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile=ca)


def connect():
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    conn.connect()
    return conn


def get(conn):
    conn.request("GET", "/v2/")
    resp = conn.getresponse()
    resp.read()
    cert = conn.sock.getpeercert(binary_form=True)
    return f"{resp.status} {hashlib.sha256(cert).hexdigest()}"


kept = connect()
for line in sys.stdin:
    command = line.strip()
    try:
        if command == "get":
            answer = get(kept)
        elif command == "new":
            conn = connect()
            answer = get(conn)
            conn.close()
        else:
            answer = f"error unknown-command"
    except Exception as e:  # the test reads the failure from the line
        answer = f"error {type(e).__name__}"
    print(answer, flush=True)
