"""autokd-dsl: a language, compiler and search for knowledge-distillation losses.

>>> from autokd_dsl import check_text, print_program
>>> print(print_program(check_text("distiller kd:\\n  logits -> softmax(4) -> kl -> 16")), end="")
distiller kd:
    logits -> softmax(4) -> kl -> 16
"""

from .errors import KDError
from .lang.check import check, check_text
from .lang.parse import parse, parse_file
from .lang.printer import print_program

__version__ = "0.1.0"
__all__ = ["check", "check_text", "parse", "parse_file", "print_program", "KDError", "__version__",
           "train", "teacher", "search", "TrainSettings", "TeacherSettings", "SearchSettings"]


def __getattr__(name):  # heavy parts (torch) load on first use only
    if name == "create_model":
        from .models import create_model

        return create_model
    if name in ("train", "teacher", "TrainSettings", "TeacherSettings", "SearchSettings"):
        from . import api

        return getattr(api, name)
    if name == "search":  # the package autokd_dsl.search is callable: it runs autokd_dsl.api.search
        import importlib

        return importlib.import_module(".search", __name__)
    if name in ("compile_distiller", "attach"):
        from .compiler import build

        return getattr(build, name)
    raise AttributeError(name)
