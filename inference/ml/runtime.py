"""Float32 serving through ONNX Runtime.

PyTorch's eager float32 kernels for the depthwise convolutions of EfficientNet-Lite0 are slow on
CPUs without native bfloat16; ONNX Runtime runs the same graph faster, with the same probabilities
to 1e-5, and on a CPU with native bfloat16 it is faster than PyTorch in bfloat16 too, so float32
through ONNX Runtime is what "auto" serves everywhere (measurements: bench/RESULTS.md,
`onnx-runtime-serving`).

``OrtModel(module)`` exports a BN-folded ``(logits, features)`` module (or, with ``outputs``, any
module of one input) to ONNX in memory (batch, height and width dynamic) and runs it; it is called
like the torch module it replaces. One
inference session per intra-op thread count, so ``torch.set_num_threads`` still sets the threads.
``resolve_runtime()`` reads ``DERM_ML_RUNTIME`` ("auto" = "onnxruntime", or "torch").
The artefact is unchanged: the conversion happens when a ``Predictor`` loads it (about 1 s per
EfficientNet-Lite0 model).
"""

from __future__ import annotations

import io
import os
import threading
import warnings

import torch
from torch import nn

RUNTIMES = ("auto", "onnxruntime", "torch")


def resolve_runtime(runtime: str | None = None) -> str:
    """ "auto" (default; env DERM_ML_RUNTIME) -> "onnxruntime"; "torch" keeps PyTorch's eager kernels."""
    r = (runtime or os.environ.get("DERM_ML_RUNTIME") or "auto").lower()
    if r not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {r!r}")
    return "onnxruntime" if r == "auto" else r


def export_onnx(
    module: nn.Module, channels: int = 3, size: int = 64, outputs: tuple[str, ...] = ("logits", "features")
) -> bytes:
    """ONNX bytes of ``module`` (eval, float32): input ``x`` (N, C, H, W), one output per name in
    ``outputs`` (each (N, ...)); N, H and W are dynamic."""
    module = module.eval()
    x = torch.zeros(1, channels, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(
            module,
            (x,),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=list(outputs),
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, **{o: {0: "n"} for o in outputs}},
        )
    return buf.getvalue()


class OrtModel:
    """A BN-folded module run by ONNX Runtime, called like the module: ``model(x)`` gives its outputs
    (``(logits, features)`` by default; ``outputs`` names them) as a tuple of torch float32 tensors."""

    def __init__(self, module: nn.Module, outputs: tuple[str, ...] = ("logits", "features")):
        import onnxruntime  # noqa: F401  (fail here, at load, when it is not installed)

        self._onnx = export_onnx(module, outputs=outputs)
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()

    def _session(self):
        import onnxruntime as ort

        threads = max(1, torch.get_num_threads())
        s = self._sessions.get(threads)
        if s is None:
            with self._lock:
                s = self._sessions.get(threads)
                if s is None:
                    so = ort.SessionOptions()
                    so.intra_op_num_threads = threads
                    so.inter_op_num_threads = 1
                    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    so.log_severity_level = 3
                    # no busy-waiting between runs: PyTorch's own threads work between them (normalise,
                    # softmax), and spinning ORT threads took their cores (bench/RESULTS.md, `onnx-runtime-serving`)
                    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                    s = ort.InferenceSession(self._onnx, so, providers=["CPUExecutionProvider"])
                    self._sessions[threads] = s
        return s

    def __call__(self, x: torch.Tensor):
        a = x.detach().float().contiguous().numpy()
        return tuple(torch.from_numpy(o) for o in self._session().run(None, {"x": a}))
