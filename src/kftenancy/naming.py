"""User id → Profile/namespace name: valid, stable, readable where possible, collision-free.

The algorithm (a compatibility contract: changing it renames tenants, so it is versioned
by this docstring and pinned by tests):

1. An empty or whitespace-only user id is an error.
2. ``key`` is the user id, or its Unicode case fold (`str.casefold`) when
   ``naming.foldCase`` is on. Nothing else is normalised: the key is the identity.
3. **Unchanged**: if ``prefix + key`` is a DNS-1123 label of at most 63 characters, is
   not reserved, and does not end in a hash-shaped suffix, it is the name.
4. **Hashed**: otherwise the name is ``prefix + readable + "-" + hash(key)`` where

   - ``hash(key)`` = one character of ``234567`` chosen by the first byte of
     ``sha256(utf-8(key))`` (byte mod 6), then the next bytes base32-encoded, lowercase,
     truncated to 11 characters (12 characters, about 53 bits);
   - ``readable`` is the key with the e-mail domain dropped (if ``naming.stripEmailDomain``),
     or the value of a leading ``CN=``/``UID=`` of an LDAP DN, folded to ASCII (NFKD, marks
     dropped), lowercased, every run of other characters replaced by ``-``, trimmed, and
     cut so the whole name fits 63 characters (``user`` if nothing readable is left);
   - if that name is reserved, ``readable`` becomes ``u-`` + readable, then ``u``, then
     nothing (the name is the prefix and the hash).

   A *hash-shaped suffix* is a digit 2-7 and 11 characters of ``[a-z2-7]`` at the end of
   a name, after a ``-`` or as the whole name.

Why this is injective: unchanged names never end in a hash-shaped suffix and hashed names
always do, so the two sets cannot meet; unchanged names are the key itself; hashed names
carry a hash of the exact key, so two keys share a hashed name only if 53 bits of sha256
collide *and* their readable parts agree. Case variants are different users unless
``foldCase`` says otherwise.

Reserved (never produced): ``default``, ``kube-*``, ``openshift``, ``openshift-*``, the
kftenancy, Kubeflow, mesh control-plane, ingress-gateway and Knative system namespaces,
``isolation.exemptNamespaces`` patterns and ``naming.reserved`` patterns.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import re
import unicodedata
from typing import Final

from kftenancy.errors import KftenancyError
from kftenancy.policy import TenancyPolicySpec

MAX_LABEL: Final = 63
HASH_LENGTH: Final = 12
_HASH_FIRST: Final = "234567"
_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HASH_SUFFIX: Final = re.compile(r"(?:^|-)[2-7][a-z2-7]{11}$")
_NOT_ALNUM: Final = re.compile(r"[^a-z0-9]+")
_DN_HEAD: Final = re.compile(r"^\s*(?:cn|uid)\s*=\s*((?:\\.|[^,+])+)", re.IGNORECASE)
ALWAYS_RESERVED: Final = ("default", "kube-*", "openshift", "openshift-*")


class NamingError(KftenancyError):
    """A user id that cannot be named (empty), or a policy that reserves every name."""


def is_dns_label(value: str) -> bool:
    """True if ``value`` is a DNS-1123 label (what a namespace name must be)."""
    return len(value) <= MAX_LABEL and bool(_DNS1123_LABEL.match(value))


def name_hash(key: str) -> str:
    """The 12-character hash suffix of a key (see the module docstring)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    rest = base64.b32encode(digest[1:]).decode("ascii").lower()
    return _HASH_FIRST[digest[0] % len(_HASH_FIRST)] + rest[: HASH_LENGTH - 1]


def reserved_patterns(policy: TenancyPolicySpec) -> tuple[str, ...]:
    """Every fnmatch pattern a tenant name must never match."""
    names = [
        *ALWAYS_RESERVED,
        policy.platform.namespace,
        policy.platform.kubeflow_namespace,
        policy.mesh.control_plane_ref.namespace,
        policy.mesh.ingress_gateway.namespace,
        *policy.serverless.system_namespaces,
        *policy.isolation.exempt_namespaces,
        *policy.naming.reserved,
    ]
    return tuple(dict.fromkeys(names))


def is_reserved(policy: TenancyPolicySpec, name: str) -> bool:
    """True if ``name`` is a system, platform or policy-reserved namespace name."""
    return any(fnmatch.fnmatchcase(name, p) for p in reserved_patterns(policy))


def readable_part(key: str, *, strip_email_domain: bool = False) -> str:
    """The human-readable part of a hashed name: lowercase ASCII letters, digits and '-'."""
    text = key
    dn = _DN_HEAD.match(text)
    if dn and "," in text:
        text = dn.group(1)
    elif strip_email_domain and "@" in text.strip("@"):
        text = text.rsplit("@", 1)[0]
    ascii_text = (
        unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    )
    return _NOT_ALNUM.sub("-", ascii_text).strip("-")


def _hashed(prefix: str, readable: str, digest: str) -> str:
    room = MAX_LABEL - len(prefix) - 1 - len(digest)
    readable = readable[:room].rstrip("-")
    if readable:
        return f"{prefix}{readable}-{digest}"
    return f"{prefix}-{digest}" if prefix and not prefix.endswith("-") else f"{prefix}{digest}"


def profile_name(policy: TenancyPolicySpec, user_id: str) -> str:
    """The Profile (and namespace) name for a user id. Deterministic; never reserved.

    Raises NamingError for an empty/whitespace-only id, or if the policy reserves every
    candidate name.
    """
    if not user_id or not user_id.strip():
        raise NamingError(f"user id {user_id!r} is empty; a user id must have visible characters")
    naming = policy.naming
    key = user_id.casefold() if naming.fold_case else user_id
    prefix = naming.prefix
    candidate = prefix + key
    if (
        is_dns_label(candidate)
        and not HASH_SUFFIX.search(candidate)
        and not is_reserved(policy, candidate)
    ):
        return candidate
    digest = name_hash(key)
    readable = readable_part(key, strip_email_domain=naming.strip_email_domain) or "user"
    for option in (readable, f"u-{readable}", "u", ""):
        name = _hashed(prefix, option, digest)
        if not is_reserved(policy, name):
            return name
    raise NamingError(
        f"every name for user id {user_id!r} is reserved by the policy "
        f"(naming.reserved / isolation.exemptNamespaces); last tried {name!r}"
    )


def label_part(value: str, max_length: int = 40) -> str:
    """An injective, label-safe rendering of an arbitrary string, for object names.

    ``value`` itself when it is already a short label without a hash-shaped suffix;
    otherwise a readable part plus the 12-character hash of the exact value.
    """
    if len(value) <= max_length and is_dns_label(value) and not HASH_SUFFIX.search(value):
        return value
    digest = name_hash(value)
    readable = readable_part(value)[: max_length - 1 - len(digest)].rstrip("-")
    return f"{readable}-{digest}" if readable else digest
