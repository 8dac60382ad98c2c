"""lrfr-curricularface: registers the CurricularFace head with lrfr-plugins."""

from lrfr_plugins import hookimpl

from .head import CurricularFace

__version__ = "0.1.0"


@hookimpl
def lrfr_register_heads(register):
    register("curricularface", CurricularFace)
