"""Reading weights, configs and results as data only: no file can run code when it is read.

A pickle names the Python callables that rebuild its objects, and PyYAML's ``unsafe_load`` (which
Detectron2's ``CfgNode.merge_from_file`` falls back to) calls the ones a ``!!python/...`` tag names,
so a ``.pkl`` checkpoint or a config from elsewhere could run anything. Here

* ``load_pickle`` (Detectron2 / Caffe2 ``.pkl`` weights) unpickles with ``find_class`` limited to
  the types a checkpoint holds, as the Python docs' "Restricting Globals" section of the pickle
  module recommends (:data:`PICKLE_ALLOWED`);
* ``load_torch`` (``.pth`` and every other PyTorch file) is ``torch.load(weights_only=True)``,
  PyTorch's own allow-list, with numpy arrays admitted as above;
* ``load_yaml`` and ``merge_config_file`` read YAML with ``yaml.safe_load`` only: a Python tag is
  refused, never constructed;
* ``load_json`` / ``load_json_lines`` / ``load_npy`` read results (``np.load`` without pickles).

Every refusal or unreadable file is one ``LongTailSegError`` line naming the file (and the class,
tag or line) and the fix: ``UntrustedFileError`` when the file would run code,
``ConfigError`` for a config that is not valid YAML or has unknown keys, ``UnreadableFileError``
for truncated results. ``load_pickle`` and ``load_torch`` raise ``UnreadableFileError`` with the
original exception as ``__cause__`` for a truncated file.

``merge_config_file(cfg, path)`` is Detectron2's ``cfg.merge_from_file(path)`` (``_BASE_``
inheritance relative to the including file, config versions) with ``yaml.safe_load``. The config
loading of the tools (``longtailseg.engine.load_config``) calls it in place of
``cfg.merge_from_file``; its errors are complete one-line messages, and ``ConfigError`` is a
``ValueError``: catch ``LongTailSegError`` before ``ValueError`` / ``KeyError``, or call it outside
such a ``try``.
"""
import _compat_pickle
import io
import json
import logging
import os
import pickle
import re

import numpy as np
import yaml

from .errors import ConfigError, LongTailSegError, UnreadableFileError, UntrustedFileError

logger = logging.getLogger(__name__)

_BASE_KEY = "_BASE_"  # fvcore.common.config.BASE_KEY
_KEYS_HELP = "LongTailSeg's keys and defaults: docs/CONFIG_REFERENCE.md, or longtailseg/config/defaults.py"


# ---------------------------------------------------------------------------------------- pickle

def _numpy_core(module):
    """numpy 2 renamed numpy.core to numpy._core (numpy.core is a deprecated alias there)."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{module}")


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (``encode(text, "latin1")``);
    other codecs are not needed to read a checkpoint, so they are not looked up."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _torch_storage_reader(path):
    """``torch.storage._load_from_bytes`` (a tensor pickled with plain pickle) calls
    ``torch.load(weights_only=False)``; this reads the same bytes as ``load_torch`` does."""
    return lambda data: _torch_load(io.BytesIO(data), f"{path} (a tensor's storage in it)")


# Containers and scalars: protocol 2 pickles sets, frozensets, bytearrays, b"" and complex
# numbers as calls of their type.
_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int", "float",
             "complex", "bool")


def _pickle_allowed(path):
    """{(module, name): object} of every global a checkpoint pickle may name."""
    import builtins
    import collections

    import torch._utils

    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed = {("builtins", name): getattr(builtins, name) for name in _BUILTINS}
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("_codecs", "encode")] = _latin1_encode
    for core in ("numpy.core", "numpy._core"):  # pickles of numpy 1.x and 2.x
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("torch._utils", "_rebuild_tensor_v2")] = torch._utils._rebuild_tensor_v2
    allowed[("torch._utils", "_rebuild_parameter")] = torch._utils._rebuild_parameter
    allowed[("torch.storage", "_load_from_bytes")] = _torch_storage_reader(path)
    return allowed


PICKLE_ALLOWED = (
    [f"builtins.{n}" for n in _BUILTINS]
    + ["collections.OrderedDict", "_codecs.encode (latin-1 only)"]
    + [f"{core}.{f}" for core in ("numpy.core", "numpy._core")
       for f in ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")]
    + ["numpy.ndarray", "numpy.dtype", "torch._utils._rebuild_tensor_v2",
       "torch._utils._rebuild_parameter", "torch.storage._load_from_bytes (read with weights_only=True)"]
)
"""The globals ``load_pickle`` admits (documentation; ``_pickle_allowed`` is the table):
containers, numbers and strings, ``OrderedDict``, numpy arrays / dtypes / scalars as numpy 1.x
and 2.x pickle them, tensors, and protocol 2's ``_codecs.encode`` for bytes. Python 2 names
(``__builtin__``, ``copy_reg``) are mapped first, as ``pickle.Unpickler.find_class`` does."""


class _RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` limited to :data:`PICKLE_ALLOWED` ("Restricting Globals", Python docs):
    every callable a pickle can call is looked up here, so nothing else can run."""

    def __init__(self, file, path, **kwargs):
        super().__init__(file, **kwargs)
        self._path = path
        self._allowed = _pickle_allowed(path)

    def find_class(self, module, name):
        # Python 2 pickles name __builtin__ / copy_reg ...: map them as Unpickler.find_class does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self._allowed.get((module, name))
        if found is None:
            raise UntrustedFileError(
                f"{self._path} would load the Python object {module}.{name} when unpickled, which "
                "weights never hold (only numpy arrays, tensors, dicts, lists, numbers and strings are "
                "read from .pkl files) and which can run code: it was not read; use weights from "
                "their original source (e.g. Detectron2's model zoo) or a .pth saved by torch.save")
        return found

    def persistent_load(self, pid):
        raise UntrustedFileError(f"{self._path} holds a persistent reference ({str(pid)[:40]!r}), which "
                                 "a .pkl checkpoint never holds: it was not read; use weights from their "
                                 "original source or a .pth saved by torch.save")


def load_pickle(path, encoding="latin1"):
    """Unpickle ``path`` admitting only :data:`PICKLE_ALLOWED`; ``encoding="latin1"`` reads
    Python 2 (Caffe2 / Detectron1) pickles as Detectron2 does."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path, encoding=encoding).load()
    except LongTailSegError:
        raise
    except Exception as e:  # EOFError, UnpicklingError, ValueError, MemoryError of a truncated file
        raise UnreadableFileError(f"{path} cannot be unpickled ({_first_line(e)}); it is truncated or "
                                  "not a pickle: copy it again") from e


# ----------------------------------------------------------------------------------------- torch

def _numpy_safe_globals():
    """numpy arrays in a ``torch.save`` file, admitted as in :data:`PICKLE_ALLOWED` (PyTorch's
    ``weights_only`` leaves numpy out unless listed; the dtype classes are checked on BUILD)."""
    multiarray = _numpy_core("multiarray")
    entries = [np.ndarray, np.dtype]
    for core in ("numpy.core", "numpy._core"):
        entries += [(multiarray._reconstruct, f"{core}.multiarray._reconstruct"),
                    (multiarray.scalar, f"{core}.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    if dtypes is not None:
        entries += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")
                    and isinstance(getattr(dtypes, n), type) and n != "ObjectDType"]
    return entries


def load_torch(path):
    """``torch.load(path, weights_only=True, map_location="cpu")``: tensors, containers, numbers,
    strings and numpy arrays; anything else is refused in one line naming the file and the object."""
    return _torch_load(path, path)


def _torch_load(file, path):
    import contextlib

    import torch

    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with safe_globals(_numpy_safe_globals()) if safe_globals else contextlib.nullcontext():
            return torch.load(file, weights_only=True, map_location="cpu")
    except Exception as e:
        message = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", message)
        if found or "blocked" in message:
            what = (f"the Python object {found.group(1)}" if found
                    else "an object outside PyTorch's allow-list")
            raise UntrustedFileError(
                f"{path} would load {what} when read, which weights and optimizer state never hold "
                "and which can run code: it was not read (torch.load weights_only=True); use a "
                "checkpoint written by LongTailSeg or Detectron2, or from the model's original source"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
        detail = f"{type(e).__name__}: {detail.group(1).strip()}" if detail else _first_line(e)
        raise UnreadableFileError(f"{path} cannot be read by torch.load ({detail}); it is truncated or "
                                  "not a PyTorch file (a Detectron2 pickle must end in .pkl): copy it "
                                  "again") from e


# ------------------------------------------------------------------------------------ JSON, .npy

def load_json(path):
    """``json.load`` of a results or statistics file; a truncated or non-text file is one line."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UnreadableFileError(f"{path} line {e.lineno} is not valid JSON ({e.msg}); the file is "
                                  "truncated or was edited: write it again (evaluate the run again "
                                  "with tools/train_net.py --eval-only)") from None
    except (UnicodeDecodeError, OSError) as e:
        raise UnreadableFileError(f"{path} cannot be read as JSON ({_first_line(e)}); "
                                  "write it again") from None


def load_json_lines(path):
    """One JSON value per non-empty line (Detectron2's ``metrics.json``)."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UnreadableFileError(
                            f"{path} line {number} is not valid JSON ({e.msg}; a run killed while "
                            "writing it?); delete that line and run again") from None
    except (UnicodeDecodeError, OSError) as e:
        raise UnreadableFileError(f"{path} cannot be read as JSON lines ({_first_line(e)})") from None
    return records


def load_npy(path):
    """``np.load(allow_pickle=False)``: an object array (a pickle) is refused, not unpickled."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UntrustedFileError(f"{path} holds pickled Python objects, not numbers, and was not "
                                     "read; write it again (evaluate the run again)") from None
        raise UnreadableFileError(f"{path} is not a valid .npy file ({_first_line(e)}); "
                                  "write it again") from None
    except (OSError, EOFError) as e:
        raise UnreadableFileError(f"{path} cannot be read as a .npy file ({_first_line(e)}); "
                                  "write it again") from None


# ------------------------------------------------------------------------------------------ YAML

def load_yaml(path):
    """``yaml.safe_load`` of ``path``: a Python (or other unknown) tag is an ``UntrustedFileError``
    and a syntax error a ``ConfigError``, each one line naming the file and the line."""
    try:
        with _open_text(path) as f:
            return yaml.safe_load(f)
    except yaml.constructor.ConstructorError as e:
        tag = re.search(r"tag '([^']*)'", str(e.problem or ""))
        if tag:
            name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            kind = ("Python tags are not accepted (they would create Python objects or run code)"
                    if "python/" in name else "only plain YAML is accepted")
            raise UntrustedFileError(
                f"{path}{_line(e)}: the YAML tag {name} was refused, not run: configs are read "
                f"with yaml.safe_load and {kind}; write the value as a plain YAML value") from None
        raise ConfigError(f"{path}{_line(e)} cannot be read as a config ({e.problem}); "
                          "fix the file") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or _first_line(e)
        raise ConfigError(f"{path}{_line(e)} is not valid YAML ({problem}); fix the file's syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) file; point at a .yaml config") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror or _first_line(e)})") from None


def load_config_dict(path, _including=()):
    """The YAML of a config file with its ``_BASE_`` files merged in, as fvcore's
    ``CfgNode.load_yaml_with_base`` builds it (a base path is relative to the file naming it;
    ``~`` expanded; later bases override earlier ones, the file overrides its bases)."""
    key = path if "://" in path else os.path.abspath(path)  # "a/../b.yaml" is "b.yaml"
    if key in (p if "://" in p else os.path.abspath(p) for p in _including):
        chain = " -> ".join(_including + (path,))
        raise ConfigError(f"{path} includes itself through _BASE_ ({chain}); remove the loop")
    loaded = load_yaml(path)
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} holds a {type(loaded).__name__}, not a mapping of config keys; "
                          "fix the file")
    if _BASE_KEY not in loaded:
        return loaded
    bases = loaded.pop(_BASE_KEY)
    merged = {}
    for base in bases if isinstance(bases, list) else [bases]:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _BASE_ must name config files, not {base!r}")
        if base.startswith("~"):
            base = os.path.expanduser(base)
        if not base.startswith(("/", "https://", "http://")):
            base = os.path.join(os.path.dirname(path), base)
        _merge_a_into_b(load_config_dict(base, _including + (path,)), merged, base)
    _merge_a_into_b(loaded, merged, path)
    return merged


def _merge_a_into_b(a, b, path):
    for key, value in a.items():
        if isinstance(value, dict) and key in b:
            if not isinstance(b[key], dict):
                raise ConfigError(f"{path}: cannot inherit key {key!r} from its _BASE_ (a mapping "
                                  "here, a value there); fix the file")
            _merge_a_into_b(value, b[key], path)
        else:
            b[key] = value


def merge_config_file(cfg, path):
    """Merge config file ``path`` into ``cfg`` as Detectron2's ``cfg.merge_from_file(path)`` does,
    reading every file with ``yaml.safe_load``; every error is one ``LongTailSegError`` line naming
    the file (see the module docstring)."""
    if not os.path.isfile(path) and "://" not in path:
        raise ConfigError(f"config file {path!r} does not exist; pass --config-file configs/...yaml")
    loaded = load_config_dict(path)
    try:
        _merge_loaded(cfg, loaded, path)
    except LongTailSegError:
        raise
    except KeyError as e:  # yacs: a key the defaults lack
        raise ConfigError(f"{e.args[0]} (in {path}); fix the key's spelling ({_KEYS_HELP})") from None
    except ValueError as e:  # yacs: a value of another type than the default's
        raise ConfigError(f"{_first_line(e)} (in {path}); give the value the type of the default "
                          f"({_KEYS_HELP}; e.g. 1.0, not 1)") from None
    except AssertionError as e:  # yacs: a value of a type configs cannot hold (a date ...)
        raise ConfigError(f"{_first_line(e)} (in {path}); fix the value") from None


def _merge_loaded(cfg, loaded, path):
    """The part of Detectron2's ``CfgNode.merge_from_file`` after loading: config versions."""
    loaded_cfg = type(cfg)(loaded)
    from detectron2.config import CfgNode as D2CfgNode

    if not isinstance(cfg, D2CfgNode) or "VERSION" not in cfg:
        cfg.merge_from_other_cfg(loaded_cfg)
        return
    from detectron2.config.compat import downgrade_config, guess_version, upgrade_config
    from detectron2.config.defaults import _C

    if cfg.VERSION != _C.VERSION:
        raise ConfigError(f"cannot merge {path} into a config of version {cfg.VERSION} "
                          f"(Detectron2's is {_C.VERSION}); start from get_cfg()")
    version = loaded_cfg.get("VERSION", None)
    if version is None:
        version = guess_version(loaded_cfg, path)
    if version > cfg.VERSION:
        raise ConfigError(f"{path} is a version {version} config, newer than this Detectron2's "
                          f"{cfg.VERSION}; update Detectron2")
    if version == cfg.VERSION:
        cfg.merge_from_other_cfg(loaded_cfg)
        return
    logger.warning(f"Loading an old v{version} config file '{path}' by automatically upgrading to "
                   f"v{cfg.VERSION}. See docs/CHANGELOG.md for instructions to update your files.")
    old = downgrade_config(cfg, to_version=version)
    old.merge_from_other_cfg(loaded_cfg)
    new = upgrade_config(old)
    cfg.clear()
    cfg.update(new)


# --------------------------------------------------------------------------------------- helpers

def _open_text(path):
    if "://" in path:  # a _BASE_ or config by URL, as Detectron2's PathManager opens it
        from detectron2.utils.file_io import PathManager

        return PathManager.open(path, "r")
    return open(path, encoding="utf-8")


def _line(error):
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return f" line {mark.line + 1}" if mark is not None else ""


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
