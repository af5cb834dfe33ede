"""Curation: quality signals, duplicates and the policy that decides what training gets."""
