"""The compiler: a checked distiller plus a teacher and a student → a torch.fx loss module.

Stages: :mod:`.taps` (resolve tap names and probe shapes) → :mod:`.lower` (build the fx graph) →
:mod:`.emit` (a standalone `.py`). :mod:`.modules` builds the learnable connectors; :mod:`.build`
holds ``compile_distiller``, the composition of the stages.
"""
