"""Export glue: GGUF writing and checking (:mod:`.gguf`), and llama.cpp run in child
processes so that a native crash fails one call, not the run (:mod:`.llama_process`).

Framework-free (no Kedro): the ``export`` pipeline's nodes and the serving backend call it.
"""
