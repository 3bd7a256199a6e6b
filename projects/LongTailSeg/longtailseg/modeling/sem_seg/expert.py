"""The interface a semantic-segmentation head implements to serve as a MEDOE expert.

``MEDOEHead`` builds K copies of the head that MODEL.MEDOE.EXPERT_HEAD names (expert 1 at the
config's width, experts 2..K narrowed by ``narrow_config``) and runs each as
``classify(decode(features, projected))``; a head that does not subclass :class:`MEDOEExpert` is
refused when the config is checked, naming the methods it lacks.
"""
import abc


class MEDOEExpert(abc.ABC):
    """Context module + classifier that MEDOE can run as one of its experts.

    A head whose decoder projects backbone features it shares with the other experts (DeepLabV3+'s
    low-level 1x1 convs) sets ``shares_projection = True`` and implements ``project`` and
    ``drop_projection``: experts 2..K then hold no projection and read expert 1's.
    """

    shares_projection = False

    @classmethod
    @abc.abstractmethod
    def narrow_config(cls, cfg, channels):
        """A copy of ``cfg`` that builds this head at ``channels`` channels (its context module,
        decoder and classifier input): how experts 2..K are made narrow."""

    @abc.abstractmethod
    def decode(self, features, projected=None):
        """The feature map the classifier reads; ``projected`` is ``project(features)`` of the
        expert sharing its projection (None: the head computes what it needs)."""

    @abc.abstractmethod
    def classify(self, decoded):
        """Logits (N, C, H', W') of the decoded feature map, calibrated as configured."""

    @property
    @abc.abstractmethod
    def logits_stride(self):
        """Stride of ``classify``'s logits relative to the input image."""

    def project(self, features):
        """The projections of ``features`` that every expert's ``decode`` reads (shared heads)."""
        raise NotImplementedError(f"{type(self).__name__} shares no projection")

    def drop_projection(self):
        """Remove this head's own projection (it reads another expert's)."""
        raise NotImplementedError(f"{type(self).__name__} shares no projection")


def missing_expert_methods(head_class):
    """Names of the interface's methods ``head_class`` does not implement (empty: it can serve)."""
    if not isinstance(head_class, type):
        return ["a class"]
    required = ("narrow_config", "decode", "classify", "logits_stride")
    if issubclass(head_class, MEDOEExpert):
        return sorted(getattr(head_class, "__abstractmethods__", ()))
    return [name for name in required if not hasattr(head_class, name)] or ["MEDOEExpert as a base class"]
