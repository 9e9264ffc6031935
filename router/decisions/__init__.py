"""Decisions: rule trees over signal leaves, ordered by priority then confidence."""
