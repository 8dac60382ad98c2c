"""Base classes for plugin authors (stable API, covered by SemVer).

Each plugin class declares ``Params`` (a frozen dataclass built with :func:`lrfr_plugins.params.param`) and
takes an instance of it as its only constructor argument; ``lrfr_plugins.create`` builds and validates it.

Finetuner authors also have ``lrfr_plugins.api.training``: the batch loader, samplers, freezing, optimizer builder,
loop skeleton and quality call the trainer and the built-in finetuners use (stable like this module).

Beyond this module, plugin authors may rely on ``lrfr_plugins.ops`` (``resize_down_up``, ``to_network_input``,
``margin_logits``: a head calls it rather than re-implementing the margin and its fallbacks),
``lrfr_plugins.metrics`` (verification and identification, ``thin_curve``), ``lrfr_plugins.synthetic``
(``SyntheticFaceGenerator``, ``draw_pairs``) and ``lrfr_plugins.testing`` (``check_plugin``); the rest of the
package is internal (see ``lrfr_plugins``'s docstring).
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
