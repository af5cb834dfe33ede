"""Small helpers every stage uses: a rate-limited progress log, a bounded parallel map."""
