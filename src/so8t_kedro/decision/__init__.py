"""The four-class decision: the scorer that reads it from a language model
(:mod:`.classifier`), batch scoring of requests (:mod:`.scoring`), its metrics and
calibration (:mod:`.metrics`), A/B statistics (:mod:`.ab_statistics`) and the reference
classifier every evaluation shows beside the model (:mod:`.reference_classifier`).
Framework-free (no kedro)."""
