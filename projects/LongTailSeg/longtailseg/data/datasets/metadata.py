"""Metadata whose values live in a file the dataset ships, read when first used.

Registration happens on ``import longtailseg`` and must read nothing (the data may not exist yet,
or be another version than the one a run will use). Detectron2's own code (evaluators,
``Visualizer``, ``build_detection_*_loader``) reads ``MetadataCatalog.get(name).stuff_classes``
directly, so the loading is in the attribute access itself rather than in a step every reader
would have to call first.
"""
import types

from detectron2.data import Metadata


class FileMetadata(Metadata):
    """:class:`Metadata` whose keys in ``FILE_KEYS`` are read from a file on first access of any
    of them (subclasses say how, in :meth:`read_file_keys`); put an instance in
    ``MetadataCatalog`` under the dataset's name.

    A missing or bad file raises the reader's :class:`~longtailseg.errors.DatasetError`, not an
    AttributeError, so neither ``hasattr`` nor ``Metadata.get(key, default)`` turns it into a
    silently absent key. Every other key behaves as in :class:`Metadata`.
    """

    FILE_KEYS = ()

    def read_file_keys(self):
        """A dict holding every key of ``FILE_KEYS``, or a one-line DatasetError."""
        raise NotImplementedError

    def load(self):
        """Read the file now if some of ``FILE_KEYS`` are not set yet; returns self."""
        if any(key not in self.__dict__ for key in self.FILE_KEYS):
            values = self.read_file_keys()
            for key in self.FILE_KEYS:
                self.__dict__.setdefault(key, values[key])  # a value set explicitly wins
        return self

    def __getattr__(self, key):  # only called for keys not set
        if key in type(self).FILE_KEYS:
            return self.load().__dict__[key]
        return super().__getattr__(key)

    def __setattr__(self, key, val):
        if key in type(self).FILE_KEYS and key not in self.__dict__:
            # Metadata's consistency check reads the old value: do not read the file for it.
            types.SimpleNamespace.__setattr__(self, key, val)
            return
        super().__setattr__(key, val)
