"""One pattern for the package's registries (quantizers, entropy coders, datasets,
engines): things of one kind by name, added by ``register`` (as a decorator too), found
by ``lookup`` with a one-line error naming the choices. A dict underneath, so that
``choices=REGISTRY``, ``name in REGISTRY`` and a test's ``monkeypatch.setitem`` work."""


class Registry(dict):
    """Things of one ``kind``, in the order they are asked: as registered, or the newest
    first (``newest_first``: a later registration overrides an earlier, broader one)."""

    def __init__(self, kind: str, *, newest_first: bool = False, error: type = ValueError,
                 unknown: str = "{kind} must be one of {choices}, got {name!r}"):
        super().__init__()
        self.kind = kind
        self.newest_first = newest_first
        self.error = error  # what lookup raises, a ValueError or a subclass
        self.unknown = unknown  # its message: {kind}, {name}, {choices}

    def register(self, item, name: str | None = None):
        """Add ``item`` under ``name`` (its ``name`` by default; a name taken is an
        error) and return it."""
        name = item.name if name is None else name
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if self.newest_first:
            older = dict(self)
            self.clear()
            self[name] = item
            self.update(older)
        else:
            self[name] = item
        return item

    def lookup(self, name: str):
        """The item registered as ``name``; otherwise a one-line error naming the choices."""
        try:
            return self[name]
        except KeyError:
            raise self.error(self.unknown.format(kind=self.kind, name=name,
                                                 choices=", ".join(self))) from None
