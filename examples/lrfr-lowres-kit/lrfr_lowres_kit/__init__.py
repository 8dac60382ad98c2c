"""lrfr-lowres-kit: one plugin of each kind, registered with lrfr-plugins through five hooks.

Each plugin lives in its own module; this module only says what the kit provides. pluggy does not pass hook
arguments that have defaults, so ``register`` is declared without one.
"""

from lrfr_plugins import hookimpl

from .blur_jpeg import BlurJpeg
from .cross_res_triplet import CrossResTriplet
from .elasticface import ElasticFaceArc
from .pairs_csv import PairsCsv
from .tenengrad import Tenengrad

__version__ = "0.1.0"
__all__ = ["BlurJpeg", "CrossResTriplet", "ElasticFaceArc", "PairsCsv", "Tenengrad"]


@hookimpl
def lrfr_register_heads(register):
    register("elasticface-arc", ElasticFaceArc)


@hookimpl
def lrfr_register_quality(register):
    register("tenengrad", Tenengrad)


@hookimpl
def lrfr_register_degradations(register):
    register("blur-jpeg", BlurJpeg)


@hookimpl
def lrfr_register_finetuners(register):
    register("cross-res-triplet", CrossResTriplet)


@hookimpl
def lrfr_register_protocols(register):
    register("pairs-csv", PairsCsv)
