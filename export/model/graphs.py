"""What each artifact actually contains: the op multiset reachable from its inference entry
point, and the node/tensor names, read from the raw file (never from a runtime, which
optimises ops away and would hide a leak).

The format-neutral part: :class:`Graph`, which each format's reader fills (with that
format's rule for what a random op is), and the DropBlock name-scope matcher.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from typing import Callable

# Stateful and stateless TensorFlow random ops, and the RNG state ops they come with: the rule
# of every format that can hold TensorFlow ops (SavedModel; TFLite Flex ops; ops tf2onnx left).
TF_RANDOM = re.compile(
    r"Random|^Stateless(TruncatedNormal|Multinomial|ParameterizedTruncatedNormal|Shuffle)"
    r"|^Stateful(Uniform|StandardNormal|TruncatedNormal)|^Rng|Multinomial$"
    r"|^(TruncatedNormal|ParameterizedTruncatedNormal)$")



def is_tf_random(op):
    """Whether a TensorFlow op type draws random numbers (or is an RNG state op)."""
    return bool(TF_RANDOM.search(op))


# Without the model only Keras's default DropBlock names can be told apart (drop_block2d,
# drop_block2d_1, plus the _N that tracing appends): a looser pattern also matches model scopes
# such as "resnet50_dropblock_1". Custom layer names are passed explicitly.
DEFAULT_NAME_PATTERN = re.compile(r"drop_block[123]d(_\d+)*", re.IGNORECASE)
# Name scopes are "/"-separated; TFLite joins fused ops' names with ";", tensors end in ":0".
_SCOPE_SEPARATORS = re.compile(r"[/;:,]")


@dataclasses.dataclass
class Graph:
    """Ops and names of one artifact. ``ops`` counts op types; ``names`` is (where, name) pairs."""

    format: str
    ops: collections.Counter
    names: list
    flex_ops: list = dataclasses.field(default_factory=list)
    unsupported_ops: list = dataclasses.field(default_factory=list)
    entry: str = ""
    # {op: ["where: node 'name'", ...]} where a reader can say which nodes hold an op: a random
    # op deep in an ONNX local function is useless to a reader told only "somewhere in graph".
    sites: dict = dataclasses.field(default_factory=dict)
    # (what, where, why) of hazards a reader found that are no op type of their own, such as an
    # ONNX Dropout whose training_mode is not a constant False.
    hazards: list = dataclasses.field(default_factory=list)
    # What the reader's format makes of a Flex op and of an op its converter left unconverted:
    # (what, with {op} in it; why), for the findings, which name no format themselves.
    flex_finding: tuple = ("Flex op {op}", "needs the TensorFlow Flex delegate")
    unsupported_finding: tuple = ("unconverted op {op}", "the converter could not lower it: "
                                                         "the model is invalid")
    # The reader's format's rule: whether an op type draws random numbers.
    is_random: Callable[[str], bool] = dataclasses.field(default=None, repr=False,
                                                         compare=False)

    def __post_init__(self):
        if self.is_random is None:
            self.is_random = is_tf_random

    def random_ops(self):
        return sorted(op for op in self.ops if self.is_random(op))

    def layer(self, op, layer_names=None):
        """The layer whose scope the first node holding ``op`` is in, when it can be told."""
        return next((layer for layer in (scope_layer(site, layer_names)
                                         for site in self.sites.get(op, [])) if layer), None)

    def where(self, op, limit=3):
        """The entry point, plus the first ``limit`` nodes holding ``op`` when known."""
        sites = self.sites.get(op, [])
        if not sites:
            return self.entry
        more = f" and {len(sites) - limit} more" if len(sites) > limit else ""
        return f"{self.entry}: {'; '.join(sites[:limit])}{more}"



def scope_layer(site, layer_names=None):
    """The innermost layer of the model whose name scope ``site`` (a reader's "where: node
    'a/b/op'") carries, or None. The layers known are those ``layer_names`` carries
    (:class:`~tfdropblock.export.model.identity.DropBlockNames`: every DropBlock and every other
    layer, the model itself left out, since its scope wraps everything)."""
    known = {name for _, name in getattr(layer_names, "dropblock_scopes", ())}
    known |= {name for _, name in getattr(layer_names, "other_scopes", ())[1:]}
    if not known:
        return None
    for part in reversed([p for p in re.split(r"[/;:,'\s]", site) if p]):
        owner = next((base for base in _scope_bases(part) if base in known), None)
        if owner is not None:
            return owner
    return None


def scope_matcher(layer_names=None, other_layers=None):
    """Predicate: does a node/tensor name carry one of ``layer_names`` as a name-scope component?

    A layer's scope is one ``/``-separated component of a name, its layer name plus the ``_N``
    suffixes TensorFlow appends when a scope is entered twice in one graph: a DropBlock named
    ``drop`` leaks as ``functional_1/drop_1/mul`` in a SavedModel traced by ExportArchive, so the
    suffix cannot be dropped from the match. It is ambiguous only against other layers whose
    names look like suffixed ones (a Conv2D named ``drop_1`` is ``functional_1/drop_1_2/...``):
    with ``other_layers``, the names of every other layer in the model, a component belongs to
    the longest layer name it extends, and only components that belong to a DropBlock match.

    ``layer_names`` entries are layer names or ``parent/name`` paths (the parent, when given,
    settles two layers sharing a name); :func:`~tfdropblock.export.model.identity.dropblock_names`
    returns a list that also carries ``dropblock_scopes`` and ``other_scopes``, used when
    ``other_layers`` is not given. With no layer names (an artifact made elsewhere), Keras's
    default DropBlock layer names (``drop_block2d``, ``drop_block2d_3``...) are looked for.
    """
    if not layer_names:
        def matches_default(name):
            return any(DEFAULT_NAME_PATTERN.fullmatch(part)
                       for part in _SCOPE_SEPARATORS.split(name) if part)
        return matches_default

    dropblocks = getattr(layer_names, "dropblock_scopes", None) or [
        _split_scope(n) for n in layer_names]
    if other_layers is None:
        other_layers = getattr(layer_names, "other_scopes", ())
    others = [_split_scope(n) if isinstance(n, str) else tuple(n) for n in other_layers]
    owners = collections.defaultdict(list)  # layer name -> [(parent or None, is DropBlock)]
    for parent, name in dropblocks:
        owners[name].append((parent, True))
    for parent, name in others:
        owners[name].append((parent, False))

    @functools.lru_cache(maxsize=65536)
    def owners_of(component):
        """The layers a component may be a scope of: those of the longest layer name it
        extends, the component itself first, then with one _N suffix less at a time."""
        owner = next((base for base in _scope_bases(component) if base in owners), None)
        return tuple(owners[owner]) if owner is not None else ()

    def is_dropblock(parts, i):
        candidates = owners_of(parts[i])
        if len({kind for _, kind in candidates}) > 1:
            # A DropBlock and another layer share the name (in different sub-models): the
            # enclosing scope tells them apart when it is in the name.
            before = parts[i - 1] if i else None
            candidates = [(p, kind) for p, kind in candidates
                          if p is None or before is None or p in _scope_bases(before)]
        # Still both: the name cannot tell, and the op checks decide instead of a guess.
        return bool(candidates) and all(kind for _, kind in candidates)

    def matches(name):
        parts = [part for part in _SCOPE_SEPARATORS.split(name) if part]
        return any(is_dropblock(parts, i) for i in range(len(parts)))

    return matches


@functools.lru_cache(maxsize=65536)
def _scope_bases(component):
    """``"drop_1_2"`` -> ``("drop_1_2", "drop_1", "drop")``: layer names it may be a scope of."""
    bases = [component]
    while True:
        shorter = re.sub(r"_\d+$", "", bases[-1])
        if shorter == bases[-1] or not shorter:
            return tuple(bases)
        bases.append(shorter)


def _split_scope(path):
    """``"a/b/db"`` -> ``("b", "db")``; a bare name has no known parent."""
    parts = [p for p in str(path).split("/") if p]
    return (parts[-2] if len(parts) > 1 else None), (parts[-1] if parts else str(path))
