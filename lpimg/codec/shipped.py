"""The name of the shipped model: every ``--model`` default and ``LearnedCodec.load()`` use it.

Its own module, free of torch, so command-line parsers can name it without loading the codec.
"""

DEFAULT_MODEL = "lpimg-j1"
