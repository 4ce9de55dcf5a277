"""The base models: loading a base on a device and saving one (:mod:`.loading`), the
embedded default and its pre-training (:mod:`.embedded`), which base and which adapter a
run means (:mod:`.selection`), and a model with its tokenizer as one catalog object
(:mod:`.bundles`)."""
