"""Request records (framework-free, no kedro): the tables' contract (:mod:`.schema`),
reading JSONL files (:mod:`.jsonl`), text normalisation (:mod:`.text`), cleaning
(:mod:`.cleaning`) with PII scrubbing (:mod:`.pii`), exact-duplicate keys and
near-duplicate groups (:mod:`.near_duplicates`), and the set an evaluation scores
(:mod:`.evaluation_set`). Their parameters are checked when a run starts
(:mod:`so8t_kedro.parameters`) and read here as plain ``params["key"]``."""
