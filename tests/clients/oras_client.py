"""Drives skiff with the Python `oras` client (oras-py); run by tests/clients.rs.

    python oras_client.py HOST WORKDIR SUBJECT_DIGEST SUBJECT_SIZE

HOST serves plain HTTP. WORKDIR holds `file.txt` (the artifact) and
`sbom.json`; the outcome is written to WORKDIR/result.json for the Rust side
to check. The subject is an image manifest already in `art/file`.

oras-py's `push` can set a config media type, manifest annotations and a
`subject`, but not a manifest `artifactType`: the signature-like referrer
pushed with it gets its artifact type from the config media type (the
referrers API falls back to that). The SBOM-like referrer, which needs an
explicit `artifactType`, is built by hand and sent with oras-py's lower-level
`upload_blob` / `upload_manifest`.
"""

import hashlib
import json
import os
import sys

import oras.client
import oras.defaults
import oras.oci

host, work, subject_digest, subject_size = sys.argv[1:5]
os.chdir(work)
client = oras.client.OrasClient(hostname=host, insecure=True)
result = {}

# 1. A file artifact with a typed config and manifest annotations.
with open("config.json", "w") as f:
    f.write('{"made-by":"oras-py"}')
resp = client.push(
    target=f"{host}/art/file:v1",
    files=["file.txt:application/vnd.skiff.test.file"],
    manifest_config="config.json:application/vnd.skiff.test.config",
    manifest_annotations={"org.skiff.test": "artifact"},
    quiet=True,
)
result["push_status"] = resp.status_code
result["push_digest"] = resp.headers.get("Docker-Content-Digest")

manifest = client.get_manifest(f"{host}/art/file:v1")
result["manifest"] = manifest

# 2. Pull it back into a fresh directory.
pulled = client.pull(target=f"{host}/art/file:v1", outdir=os.path.join(work, "pulled"))
result["pulled"] = pulled

# 3. A signature-like referrer through push(subject=...).
subject = oras.oci.Subject(
    mediaType=oras.defaults.default_manifest_media_type,
    digest=subject_digest,
    size=int(subject_size),
)
with open("sig.json", "w") as f:
    f.write('{"signature":"not really"}')
resp = client.push(
    target=f"{host}/art/file:sig",
    files=["sig.json:application/vnd.skiff.test.signature.payload"],
    manifest_config="config.json:application/vnd.skiff.test.signature",
    manifest_annotations={"org.skiff.kind": "signature"},
    subject=subject,
    quiet=True,
)
result["sig_status"] = resp.status_code
result["sig_digest"] = resp.headers.get("Docker-Content-Digest")
result["sig_oci_subject"] = resp.headers.get("OCI-Subject")

# 4. An SBOM-like referrer with an explicit artifactType, pushed by digest
#    through the lower-level calls (push() cannot set artifactType).
container = client.get_container(f"{host}/art/file")
empty = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": oras.defaults.blank_config_hash,
    "size": 2,
}
with open("empty.json", "w") as f:
    f.write("{}")
resp = client.upload_blob("empty.json", container, empty)
assert resp.status_code in (200, 201), (resp.status_code, resp.text)
layer = oras.oci.NewLayer("sbom.json", media_type="application/spdx+json")
resp = client.upload_blob("sbom.json", container, layer)
assert resp.status_code in (200, 201), (resp.status_code, resp.text)
sbom = {
    "schemaVersion": 2,
    "mediaType": oras.defaults.default_manifest_media_type,
    "artifactType": "application/vnd.skiff.test.sbom",
    "config": empty,
    "layers": [layer],
    "subject": {
        "mediaType": oras.defaults.default_manifest_media_type,
        "digest": subject_digest,
        "size": int(subject_size),
    },
    "annotations": {"org.skiff.kind": "sbom"},
}
# upload_manifest sends requests' json= encoding, which is json.dumps' default.
sbom_digest = "sha256:" + hashlib.sha256(json.dumps(sbom).encode()).hexdigest()
resp = client.upload_manifest(sbom, client.get_container(f"{host}/art/file@{sbom_digest}"))
result["sbom_status"] = resp.status_code
result["sbom_digest"] = sbom_digest
result["sbom_response_digest"] = resp.headers.get("Docker-Content-Digest")
result["sbom_oci_subject"] = resp.headers.get("OCI-Subject")

# 5. The referrers API, through oras-py's own request path.
base = f"http://{host}/v2/art/file/referrers/{subject_digest}"
resp = client.do_request(base, "GET", headers={"Accept": oras.defaults.default_index_media_type})
result["referrers_status"] = resp.status_code
result["referrers_content_type"] = resp.headers.get("Content-Type")
result["referrers"] = resp.json()
resp = client.do_request(f"{base}?artifactType=application/vnd.skiff.test.sbom", "GET")
result["filtered_status"] = resp.status_code
result["filters_applied"] = resp.headers.get("OCI-Filters-Applied")
result["filtered"] = resp.json()

# 6. Tags as oras-py lists them.
result["tags"] = client.get_tags(f"{host}/art/file")

with open(os.path.join(work, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
