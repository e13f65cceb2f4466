"""oras-py against skiff over TLS with bearer tokens; run by tests/tls.rs.

    python oras_tls.py HOST WORKDIR WRITER WRITER_PASSWORD READER READER_PASSWORD

HOST serves HTTPS; the test CA comes in REQUESTS_CA_BUNDLE. The writer
pushes WORKDIR/file.txt to team/artifact:v1, the reader pulls it into
WORKDIR/pulled and then tries to push to team/bob-artifact:v1, which the
policy refuses. Exits non-zero if any step goes otherwise.
"""

import os
import sys

import oras.client

host, work, writer, writer_pw, reader, reader_pw = sys.argv[1:7]
os.chdir(work)


def client(user, password):
    c = oras.client.OrasClient(hostname=host, insecure=False, tls_verify=True)
    # Credentials for the token endpoint; the 401's challenge says where it is.
    c.auth.set_basic_auth(user, password)
    # oras-py 0.2.43 keeps its first token (pull scope, from the blob check
    # before an upload) and answers a 401 with error="insufficient_scope"
    # with that same token again. The distribution spec's answer to a token
    # without the scope is that 401, so ask for a new token on it, as
    # docker, podman and skopeo do.
    plain = c.auth.authenticate_request

    def authenticate_request(original, headers, refresh=False):
        challenge = original.headers.get("Www-Authenticate", "")
        refresh = refresh or "insufficient_scope" in challenge
        return plain(original, headers, refresh=refresh)

    c.auth.authenticate_request = authenticate_request
    return c


resp = client(writer, writer_pw).push(
    target=f"{host}/team/artifact:v1",
    files=["file.txt:application/vnd.skiff.test.file"],
    quiet=True,
)
assert resp.status_code == 201, f"push: {resp.status_code} {resp.text}"

pulled = client(reader, reader_pw).pull(
    target=f"{host}/team/artifact:v1", outdir=os.path.join(work, "pulled")
)
assert pulled, "pull returned no files"

try:
    resp = client(reader, reader_pw).push(
        target=f"{host}/team/bob-artifact:v1",
        files=["file.txt:application/vnd.skiff.test.file"],
        quiet=True,
    )
    refused = resp.status_code in (401, 403)
except Exception as e:  # oras-py raises on a refused upload
    refused = any(w in str(e) for w in ("401", "403", "UNAUTHORIZED", "DENIED"))
    if not refused:
        raise
assert refused, "the reader's push was not refused"
print("ok")
