"""PII entity labels: the ones the router's PII model and patterns report, and vLLM Semantic Router's
label names (``pii_types_allowed: [EMAIL_ADDRESS, PERSON, GPE, ...]``) mapped onto them.

Pure data, so the config schema can reject an unknown label at load time: an allowance that names no
label the detector knows would otherwise be a silent no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

# What the bundled token classifier (models/pii, BIO tags without the B-/I- prefix) and the patterns
# in router/signals/pii.py report.
MODEL_LABELS: frozenset[str] = frozenset(
    {
        "GIVEN_NAME",
        "SURNAME",
        "EMAIL",
        "PHONE",
        "URL",
        "TAX_ID",
        "BANK_ACCOUNT",
        "ROUTING_NUMBER",
        "GOVERNMENT_ID",
        "PASSPORT",
        "DRIVERS_LICENSE",
        "BUILDING_NUMBER",
        "STREET_NAME",
        "SECONDARY_ADDRESS",
        "CITY",
        "STATE",
        "ZIP_CODE",
    }
)
PATTERN_LABELS: frozenset[str] = frozenset({"EMAIL", "CREDIT_CARD", "GOVERNMENT_ID", "IP_ADDRESS", "PHONE"})
ROUTER_LABELS: frozenset[str] = MODEL_LABELS | PATTERN_LABELS

# vLLM-SR label → the router labels it covers. An empty tuple: a kind the router's detector never
# reports, so allowing it changes nothing (it is never the reason for a match).
REFERENCE_LABELS: dict[str, tuple[str, ...]] = {
    "EMAIL_ADDRESS": ("EMAIL",),
    "PERSON": ("GIVEN_NAME", "SURNAME"),
    "GPE": ("CITY", "STATE"),
    "STREET_ADDRESS": ("BUILDING_NUMBER", "STREET_NAME", "SECONDARY_ADDRESS"),
    "ZIP_CODE": ("ZIP_CODE",),
    "PHONE_NUMBER": ("PHONE",),
    "CREDIT_CARD": ("CREDIT_CARD",),
    "US_SSN": ("GOVERNMENT_ID",),
    "US_DRIVER_LICENSE": ("DRIVERS_LICENSE",),
    "IP_ADDRESS": ("IP_ADDRESS",),
    "IBAN_CODE": ("BANK_ACCOUNT",),
    "DOMAIN_NAME": ("URL",),
    "DATE_TIME": (),
    "AGE": (),
    "NRP": (),
    "ORGANIZATION": (),
    "NO_PII": (),
}

# Identifier kinds whose every real instance carries digits (SSNs, licence, passport, account and
# routing numbers). A model span of these kinds with no digit is a false alarm — the token classifier
# flags long letter runs such as a 200-character "ddd..." placeholder as DRIVERS_LICENSE.
NUMERIC_ID_LABELS: frozenset[str] = frozenset(
    {"TAX_ID", "BANK_ACCOUNT", "ROUTING_NUMBER", "GOVERNMENT_ID", "PASSPORT", "DRIVERS_LICENSE", "CREDIT_CARD"}
)

KNOWN_LABELS: frozenset[str] = ROUTER_LABELS | frozenset(REFERENCE_LABELS)


def expand(labels: Iterable[str]) -> frozenset[str]:
    """The router labels a list of router and/or vLLM-SR labels allows."""
    out: set[str] = set()
    for label in labels:
        name = label.strip().upper()
        out.update(REFERENCE_LABELS.get(name, (name,)))
    return frozenset(out)


def unknown(labels: Iterable[str]) -> list[str]:
    return [label for label in labels if label.strip().upper() not in KNOWN_LABELS]


def never_reported(labels: Iterable[str]) -> list[str]:
    """vLLM-SR labels that name a kind the router's detector does not report (allowing them is a no-op)."""
    return [label for label in labels if REFERENCE_LABELS.get(label.strip().upper()) == ()]
