"""Request records: near-duplicate grouping and PII scrubbing (framework-free, no kedro)."""
