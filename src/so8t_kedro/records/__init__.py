"""Request records (framework-free, no kedro): the tables' contract (:mod:`.schema`,
:mod:`.tables`), reading JSONL files (:mod:`.jsonl`), text normalisation (:mod:`.text`),
cleaning (:mod:`.cleaning`) with PII scrubbing (:mod:`.pii`), exact-duplicate keys and
near-duplicate groups of texts (:mod:`.near_duplicates`) applied to record tables
(:mod:`.deduplication`), the group-aware split (:mod:`.split`), the quarantine
(:mod:`.quarantine`), the data-quality report (:mod:`.quality_report`), and the set an
evaluation scores (:mod:`.evaluation_set`). Their parameters are checked when a run starts
(:mod:`so8t_kedro.parameters`) and read here as plain ``params["key"]``."""
