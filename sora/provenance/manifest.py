"""C2PA manifests with `c2pa-python` (pinned: its API changes often): sign a file's bytes, and read one back.

The manifest holds a `c2pa.created` action whose digitalSourceType is IPTC's trainedAlgorithmicMedia, the
generator (sora and its version) and our `org.sora.generation` assertion (model fingerprint, sampler settings,
seed, the prompt's SHA-256 (for an expanded prompt, the expansion's too and the expander), the watermark: its
payload, or that none was embedded and why). c2pa-rs binds it to the file with a hash of every byte but the
manifest's own (a BMFF hash for mp4, a data hash for GIF) and signs the claim: a changed byte of video data makes
the hash mismatch. Which formats it can sign is the library's list (`can_sign`): c2pa-python 0.38.1 signs mp4
and GIF, not WebM.
"""

import functools
import importlib.metadata
import io
import json
from dataclasses import dataclass, field

from sora.errors import SoraError
from sora.provenance.certs import DEV_SIGNER_NAME, SigningIdentity

SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION = "org.sora.generation"
MIME = "video/mp4"

# ---------------------------------------------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------------------------------------------


def manifest_definition(title: str, version: str, generation: dict) -> dict:
    """The manifest c2pa's Builder takes: the created action and our generation assertion."""
    return {
        "claim_generator_info": [{"name": "sora", "version": version}],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": SOURCE_TYPE,
                "softwareAgent": {"name": "sora", "version": version}}]}},
            {"label": ASSERTION, "data": generation},
        ],
    }


@functools.cache
def _signable() -> frozenset:
    import c2pa

    return frozenset(c2pa.Builder.get_supported_mime_types())


def can_sign(mime: str) -> bool:
    """Whether c2pa can embed a manifest in a file of this MIME type."""
    return mime in _signable()


def c2pa_version() -> str:
    return importlib.metadata.version("c2pa-python")


def sign(data: bytes, mime: str, definition: dict, identity: SigningIdentity) -> bytes:
    """A file's bytes -> the same file with the signed manifest embedded (an mp4 `uuid` box, a GIF application
    extension)."""
    out = io.BytesIO()
    sign_stream(io.BytesIO(data), out, mime, definition, identity)
    return out.getvalue()


def sign_stream(source, dest, mime: str, definition: dict, identity: SigningIdentity) -> None:
    """`sign` from one seekable file object into another (a long video's file, never held in memory here)."""
    import c2pa

    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain_pem, identity.key_pem, None)
    try:
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(definition) as builder:
            builder.sign(signer, mime, source, dest)
    except c2pa.C2paError as e:
        raise SoraError(f"C2PA signing failed (provenance.cert / provenance.key?): {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ManifestReport:
    status: str  # valid | tampered | absent | unsupported (a format that cannot carry one)
    claims: dict | None = None
    failures: list = field(default_factory=list)  # validation codes that make it tampered


# Codes that say the signature or the hard binding does not hold; an untrusted (development or unknown) signer is
# reported in the claims, not as tampering.
NOT_TAMPERING = {"signingCredential.untrusted", "signingCredential.ocsp.skipped", "timeStamp.untrusted"}


def read_manifest(data: bytes, mime: str = MIME) -> ManifestReport:
    """The active manifest of a file's bytes: valid, tampered (a hash or signature fails), or absent."""
    import c2pa

    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data))
    except c2pa.C2paError as e:  # a manifest that cannot be parsed was there and is broken
        return ManifestReport("tampered", None, [str(e).splitlines()[0]])
    if reader is None:
        return ManifestReport("absent")
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    failures = [s["code"] for s in store.get("validation_status", []) if s.get("code") not in NOT_TAMPERING]
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    claims = summarise(active, state)
    status = "tampered" if state == "Invalid" or failures else "valid"
    return ManifestReport(status, claims, failures)


def summarise(active: dict, state: str | None) -> dict:
    """What a manifest says: the generator, source type, our generation assertion, and who signed it."""
    out = {"generator": None, "digital_source_type": None, "generation": None, "signer": None,
           "trusted": state == "Trusted"}
    gens = active.get("claim_generator_info") or []
    if gens:
        out["generator"] = " ".join(str(gens[0].get(k, "")) for k in ("name", "version")).strip()
    for a in active.get("assertions", []):
        if a.get("label", "").startswith("c2pa.actions"):
            for action in a.get("data", {}).get("actions", []):
                if action.get("action") == "c2pa.created":
                    out["digital_source_type"] = action.get("digitalSourceType")
        elif a.get("label") == ASSERTION:
            out["generation"] = a.get("data")
    sig = active.get("signature_info") or {}
    name = sig.get("common_name")
    out["signer"] = name
    out["development_key"] = name == DEV_SIGNER_NAME
    return out
