"""Base classes for plugin authors (stable API, covered by SemVer).

Each plugin class declares ``Params`` (a frozen dataclass built with :func:`lrfr_plugins.params.param`) and
takes an instance of it as its only constructor argument; ``lrfr_plugins.create`` builds and validates it.
"""

from ..params import NoParams, param
from .backbone import Backbone
from .dataset import FaceDataset
from .degradation import DegradedBatch, Degradation
from .finetuner import Finetuner, FinetuneContext
from .head import Head
from .protocol import Embedder, Protocol, ProtocolResult
from .quality import Quality

__all__ = ["Backbone", "FaceDataset", "Degradation", "DegradedBatch", "Finetuner", "FinetuneContext", "Head",
           "Embedder", "Protocol", "ProtocolResult", "Quality", "NoParams", "param"]
