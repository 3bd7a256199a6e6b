"""Checkpoints a week-long run can trust: complete loads, finite and whole saves.

``LongTailCheckpointer`` is Detectron2's ``DetectionCheckpointer`` (same files, same loading of
Detectron2 and Caffe2 checkpoints) that

* keeps what the last load could not fill (``last_incompatible``), so that stage 2 and
  ``--eval-only`` refuse weights of another model instead of running with random layers;
* refuses to save non-finite parameters, buffers or optimizer state, so that after a divergence
  ``last_checkpoint`` still names the last good checkpoint;
* writes the checkpoint and ``last_checkpoint`` under a temporary name and renames them;
* turns an unreadable file (empty, truncated, not a checkpoint) into a one-line error;
* reads every file as data only (``longtailseg.safe_files``): ``.pkl`` through a restricted
  unpickler instead of Detectron2's ``pickle.load``, everything else with
  ``torch.load(weights_only=True)``, so that weights, optimizer state or a ``last_checkpoint``
  from elsewhere cannot run code; a file that would is refused in one line naming it.
"""
import logging
import os
import tempfile

import torch

from detectron2.checkpoint import DetectionCheckpointer

from ..errors import LongTailSegError, UnreadableFileError, one_line
from ..io import write_atomically
from ..safe_files import load_pickle, load_torch

logger = logging.getLogger(__name__)


class CheckpointError(LongTailSegError, ValueError):
    """A checkpoint cannot be read, does not fit the model, or would hold non-finite values."""


def _non_finite(named_tensors):
    return [name for name, t in named_tensors
            if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]


def _optimizer_tensors(state, prefix="optimizer"):
    """(name, tensor) of every tensor in a nested optimizer / scheduler state dict."""
    if torch.is_tensor(state):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _optimizer_tensors(value, f"{prefix}.{key}")
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _optimizer_tensors(value, f"{prefix}.{i}")


class LongTailCheckpointer(DetectionCheckpointer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last_incompatible = None

    def _load_file(self, filename):
        if os.path.isfile(filename) and os.path.getsize(filename) == 0:
            raise CheckpointError(f"checkpoint {filename} is empty (0 bytes; an interrupted copy or "
                                  "save?); copy it again or point MODEL.WEIGHTS at another file")
        try:
            return self._read_checkpoint(filename)
        except UnreadableFileError as e:  # truncated, not a checkpoint: names the file
            raise CheckpointError(f"checkpoint {one_line(e)}; with --resume, delete it and write the "
                                  "previous checkpoint's name into last_checkpoint") from None
        except LongTailSegError:  # UntrustedFileError: refused, one line naming the file
            raise
        except Exception as e:  # a file that unpickles but holds no checkpoint (AttributeError ...)
            raise CheckpointError(
                f"checkpoint {filename} cannot be read ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'}); it is truncated "
                "or not a PyTorch/Detectron2 checkpoint: copy it again, or with --resume delete it and "
                "write the previous checkpoint's name into last_checkpoint"
            ) from None

    def _read_checkpoint(self, filename):
        """``DetectionCheckpointer._load_file`` with ``pickle.load`` and ``torch.load`` replaced by
        the data-only readers; the returned dicts are Detectron2's."""
        if filename.endswith(".pkl"):
            data = load_pickle(filename, encoding="latin1")
            if not isinstance(data, dict):
                raise CheckpointError(f"{filename} holds a {type(data).__name__}, not a dict of weights; "
                                      "point MODEL.WEIGHTS at a Detectron2 or Caffe2 .pkl checkpoint")
            if "model" in data and "__author__" in data:  # Detectron2 model zoo format
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            if "blobs" in data:  # Caffe2 / Detectron1: detection models have "blobs"
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        loaded = load_torch(filename)
        if filename.endswith(".pyth"):  # pycls
            if not isinstance(loaded, dict) or "model_state" not in loaded:
                raise CheckpointError(f"cannot load .pyth file {filename}; pycls checkpoints must "
                                      "contain 'model_state'")
            model_state = {k: v for k, v in loaded["model_state"].items()
                           if not k.endswith("num_batches_tracked")}
            return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{filename} holds a {type(loaded).__name__}, not a checkpoint dict; "
                                  "point MODEL.WEIGHTS at a model_final.pth written by training")
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def _load_model(self, checkpoint):
        self.last_incompatible = super()._load_model(checkpoint)
        return self.last_incompatible

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        bad = _non_finite(data["model"].items()) + _non_finite(
            _optimizer_tensors({k: v for k, v in data.items() if k != "model"}, ""))
        if bad:
            iteration = data.get("trainer", {}).get("iteration", data.get("iteration", "?"))
            raise CheckpointError(
                f"training diverged by iteration {iteration}: {len(bad)} tensors hold NaN or inf "
                f"(first: {', '.join(bad[:3])}), so {name}.pth was not written and last_checkpoint "
                "still names the last finite checkpoint; lower SOLVER.BASE_LR or set "
                "SOLVER.CLIP_GRADIENTS.ENABLED True, then --resume"
            )
        path = os.path.join(self.save_dir, f"{name}.pth")
        logger.info(f"Saving checkpoint to {path}")
        write_atomically(path, lambda f: torch.save(data, f), binary=True)
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, last_filename_basename):
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_atomically(path, lambda f: f.write(last_filename_basename))


def check_complete_load(checkpointer, weights, may_be_missing=()):
    """Refuse a load that left parameters or buffers of the model unfilled or mis-shaped, except
    those under ``may_be_missing`` (module-name prefixes a second stage adds)."""
    incompatible = checkpointer.last_incompatible
    if incompatible is None:
        raise CheckpointError(f"no weights were loaded from {weights!r}; set MODEL.WEIGHTS to the "
                              "model_final.pth of the run that trained this model")
    misshapen = {k for k, _, _ in incompatible.incorrect_shapes}
    missing = [k for k in incompatible.missing_keys
               if k not in misshapen and not k.startswith(tuple(may_be_missing))]
    shapes = [f"{k} {tuple(a)} in the file, {tuple(b)} in the model"
              for k, a, b in incompatible.incorrect_shapes]
    if missing or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing from the file (e.g. {', '.join(missing[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:2])})")
        raise CheckpointError(
            f"{weights} does not fit this model: of the model's parameters and buffers "
            f"{' and '.join(parts)}; "
            "it was trained with another config (model, NUM_CLASSES): point MODEL.WEIGHTS at the "
            "checkpoint of the run this config continues"
        )


def check_weights_file(cfg, resuming):
    """``--eval-only`` evaluates MODEL.WEIGHTS (or, with --resume, OUTPUT_DIR's last checkpoint):
    refuse a run that would evaluate a randomly initialised model."""
    if resuming and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise CheckpointError("--eval-only needs MODEL.WEIGHTS (it is empty, so a random model would "
                              "be evaluated); add MODEL.WEIGHTS path/to/model_final.pth")
    if "://" not in weights and not os.path.isfile(weights):
        raise CheckpointError(f"MODEL.WEIGHTS {weights} does not exist; point it at the model_final.pth "
                              "of the run to evaluate")


def check_output_dir(output_dir):
    """OUTPUT_DIR must be a folder this process can write (checked before any work is done)."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise CheckpointError(f"OUTPUT_DIR {output_dir} is a file, not a folder; set OUTPUT_DIR to a folder")
    try:
        os.makedirs(output_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=output_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(f"OUTPUT_DIR {output_dir} cannot be written ({e.strerror}); set OUTPUT_DIR "
                              "to a folder you can write, or fix its permissions") from None
