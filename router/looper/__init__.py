"""Deliberation algorithms (loopers): one interface, one table from ``algorithm.type`` to implementation."""
