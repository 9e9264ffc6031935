"""Logs, metrics, admin HTTP surface."""
