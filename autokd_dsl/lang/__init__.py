"""The language: parse `.kd` text, check names and kinds, and print the IR back. Imports no torch.

Stages: :mod:`.parse` (lark grammar → IR with spans) → :mod:`.check` (names, kinds, normalised IR) →
:mod:`.printer` (canonical text). :mod:`.ops` is the op registry, :mod:`.kinds` the kind patterns,
:mod:`.ir` the immutable expressions, :mod:`.library` the published distillers shipped as `.kd` files.
"""
