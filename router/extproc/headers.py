"""Transitional alias: the header registry lives in ``router.headers`` (a leaf module the loopers may
import without depending on the transport)."""

from router.headers import *  # noqa: F403
from router.headers import INTERNAL_PREFIX, REGISTRY, RESPONSE_COPIED, HeaderSpec, markdown_table  # noqa: F401
