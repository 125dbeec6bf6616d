"""Upload policies and URL signatures, shaped like Alibaba OSS's so clients meet the real formats.

The policy is base64 JSON with ``expiration`` and ``conditions``; its signature is
base64 HMAC-SHA1 with a secret that lives only in this sandbox instance. Object
URLs carry ``Expires``, ``OSSAccessKeyId`` and a hex ``Signature``: a client that
drops the query string is refused (403), as OSS would refuse it.

Threading: a Signer is immutable after construction; UploadPolicy is frozen.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from urllib.parse import parse_qs, urlencode

_EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class UrlSignature(Enum):
    VALID = "valid"
    MISSING = "missing"
    INVALID = "invalid"


class Signer:
    def __init__(self) -> None:
        self.access_id = "LTAI5t" + secrets.token_hex(9)  # the shape of an Alibaba AccessKey id
        self._secret = secrets.token_bytes(32)

    def _mac(self, message: str) -> bytes:
        return hmac.new(self._secret, message.encode("utf-8"), hashlib.sha1).digest()

    def sign_policy(self, policy_b64: str) -> str:
        return base64.b64encode(self._mac(policy_b64)).decode("ascii")

    def policy_signature_valid(self, policy_b64: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign_policy(policy_b64), signature)

    def _url_signature(self, resource: str, expires: int) -> str:
        return self._mac(f"GET\n{resource}\n{expires}\n{self.access_id}").hex()

    def signed_query(self, resource: str, expires: int) -> str:
        """The query string of a pre-signed URL for ``resource`` (an object key, without a leading slash)."""
        return urlencode([("Expires", str(expires)), ("OSSAccessKeyId", self.access_id),
                          ("Signature", self._url_signature(resource, expires))])

    def check_url(self, resource: str, query: str) -> UrlSignature:
        values = {name: found[0] for name, found in parse_qs(query, keep_blank_values=True).items()}
        expires, access_id, signature = (values.get(name)
                                         for name in ("Expires", "OSSAccessKeyId", "Signature"))
        if not (expires and access_id and signature):
            return UrlSignature.MISSING
        if access_id != self.access_id or not expires.isdigit():
            return UrlSignature.INVALID
        expected = self._url_signature(resource, int(expires))
        return UrlSignature.VALID if hmac.compare_digest(expected, signature) else UrlSignature.INVALID


@dataclass(frozen=True)
class UploadPolicy:
    expiration: float  # epoch seconds
    min_bytes: int
    max_bytes: int
    key_prefix: str
    exact_key: str | None = None  # the newer policy shape names the whole key

    def encode(self) -> str:
        stamp = datetime.fromtimestamp(self.expiration, tz=UTC).strftime(_EXPIRATION_FORMAT)
        conditions: list[list[object]] = [
            ["content-length-range", self.min_bytes, self.max_bytes],
            ["starts-with", "$key", self.key_prefix],
        ]
        if self.exact_key is not None:
            conditions.append(["eq", "$key", self.exact_key])
        document = {"expiration": stamp[:-4] + "Z", "conditions": conditions}  # milliseconds, like OSS
        return base64.b64encode(json.dumps(document).encode("utf-8")).decode("ascii")

    @classmethod
    def decode(cls, policy_b64: str) -> UploadPolicy:
        try:
            document = json.loads(base64.b64decode(policy_b64, validate=True))
            expiration = datetime.strptime(document["expiration"], _EXPIRATION_FORMAT)
            conditions = document["conditions"]
            size_range = next(c for c in conditions if c[0] == "content-length-range")
            prefix = next(c for c in conditions if c[0] == "starts-with" and c[1] == "$key")
            exact = next((c[2] for c in conditions if c[0] == "eq" and c[1] == "$key"), None)
            return cls(expiration=expiration.replace(tzinfo=UTC).timestamp(),
                       min_bytes=int(size_range[1]), max_bytes=int(size_range[2]),
                       key_prefix=str(prefix[2]), exact_key=exact)
        except (binascii.Error, ValueError, KeyError, IndexError, TypeError, StopIteration) as error:
            raise ValueError(f"unreadable policy document: {error}") from error


def encode_callback(api_origin: str, req_id: str) -> str:
    """The base64 callback description OSS would call back to the API with once the upload lands."""
    description = {
        "callbackUrl": f"{api_origin}/api/file/v1/oss_callback",
        "callbackBody": f"bucket=${{bucket}}&object=${{object}}&size=${{size}}&mimeType=${{mimeType}}"
                        f"&reqId={req_id}",
        "callbackBodyType": "application/x-www-form-urlencoded",
    }
    return base64.b64encode(json.dumps(description).encode("utf-8")).decode("ascii")
