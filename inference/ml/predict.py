"""Image in, ranked differential out.

Public API (stable; the Django side calls these):

    from inference.ml.predict import Predictor, Differential, RankedItem
    P = Predictor.load(model_dir)              # once per worker process; eval mode, frozen weights
    diff = P.predict_one(pil_image)            # -> Differential
    diffs = P.predict(list_of_pil_images)      # -> list[Differential]
    diff.to_dict()                             # JSON-serialisable

``Differential``: ``ranked`` (list of RankedItem(sub_class, meta_class, probability,
fine_probability), sorted by fused probability), ``meta_probabilities`` {meta: p} (coarse model),
``fused_method``, ``malignancy_score`` (S = sum_i P_i s_i, None without grades),
``malignancy_grade`` (1 if S < 1.5, 2 if S < 2.5, else 3), ``max_probability``, ``margin``
(top1 - top2), ``ood_score`` (cosine distance of the fine model's pooled features to the nearest
training class mean) and ``looks_unfamiliar`` (ood_score above the 99th percentile of the
training images' scores, stored in the artefact; where the artefact has a triage calibration,
the stronger detector of ``ood.py`` decides instead, its score in ``triage``).

Triage (``triage.py``): ``P.predict(images, modality=None, thresholds=None)``. Where the artefact
holds ``triage.json`` (``python -m inference.ml calibrate`` or ``triage_fit.fit_triage``), the
product-fused probabilities are temperature-scaled: ``ranked[i].probability`` is the calibrated one,
``ranked[i].uncalibrated_probability`` the fused one before, ``calibrated`` is True (False for
``method`` "hard"/"flat", whose probabilities stay as fused; tiers always come from the calibrated
product differential). ``triage`` = {"tier": "urgent"|"refer"|"routine"|None, "reason": plain
words, "abstain": None|"no_grades"|"no_calibration"|"modality"|"unfamiliar", "thresholds":
{"urgent", "malignant"}, "urgent_probability", "malignant_probability", "modality",
"model_modality", "unfamiliar", "unfamiliar_score", "unfamiliar_threshold"}. ``modality`` (one
string or one per image) abstains for photos of another modality than the model's;
``thresholds`` takes per-site thresholds (``triage.thresholds_for_targets``). An artefact without
``triage.json`` serves as before with tier None ("this model has no triage calibration; run
calibrate"). ``malignancy_score`` / ``malignancy_grade`` stay the thesis' S and grade on the
uncalibrated product probabilities: numbers only, never the source of advice.

Ensembles: an artefact may hold several fine models (``fine_members`` in its manifest, trained
with ``--fine-models N``); ``p_fine`` is the mean of their softmax outputs, the OOD features come
from the first one. ``Predictor.load(model_dir, members=k)`` uses only the first k.

For Grad-CAM: ``P.fine_model`` (the first fine model; ``P.fine_models`` lists all),
``P.coarse_model`` (torch modules, eval mode),
``P.preprocess(img) -> tensor (1, 3, S, S)`` and ``P.gradcam_layer_name`` ("backbone.head"; use
``model.get_submodule(P.gradcam_layer_name)``).

Precision: ``Predictor.load(model_dir, precision="auto")`` runs the BN-folded copies in float32
through ONNX Runtime (below). Where ONNX Runtime is not used (``runtime="torch"`` or not installed),
"auto" runs them in bfloat16 (stem and first blocks in float32: ``networks.MixedBf16``, whose
comment gives the measured agreement and cost) where the CPU multiplies bfloat16 natively
(AVX512-BF16 / AMX), else in float32; ``"fp32"`` / ``"bf16"`` force one, and the environment variable
``DERM_ML_PRECISION`` sets the default. ``"int8"`` (opt-in) serves statically
quantized copies (``quantize.py``; needs the artefact's ``int8.safetensors`` calibration, written
by ``python -m inference.ml calibrate --int8``): 1.25x faster on an AVX2-only CPU for about one point of
macro F1 (bench/RESULTS.md, `int8-serving`).
Float32 runs through ONNX Runtime (``runtime.OrtModel``; ``runtime="torch"`` or
``DERM_ML_RUNTIME=torch`` keeps PyTorch's kernels, which also serve when ONNX Runtime is missing).
Grad-CAM always uses the float32 originals. ``P.precision`` and ``P.runtime`` say which one runs.

Patient metadata: where the artefact holds ``metadata.json`` (trained on data with age, sex or body
site; ``metadata.py``), ``P.predict(images, metadata=[{"age": 63, "sex": "female", "site": "back"}, ...])``
multiplies in what those say (a missing or unknown field changes nothing) and
``Differential.extra["metadata_used"]`` lists the fields that entered; ``P.metadata_fine`` is None otherwise.

Shared trunk: where the coarse model holds the first fine model's stem and first blocks unchanged
(trained with ``freeze_transferred``), float32 serving computes that part once for both
(``networks.SharedTrunkPair``); ``P.shared_depth`` says how many trunk modules are shared (0: none),
``share_trunk=False`` turns it off. The probabilities are the same to float rounding.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import artefact as art
from .data import load_image, normalise
from .device import resolve_device
from .metadata import FILE as METADATA_FILE
from .metadata import MetadataModel, fuse_with_metadata, read_fields
from .networks import (
    GRADCAM_LAYER,
    Classifier,
    MixedBf16,
    SharedTrunkPair,
    fuse_for_inference,
    resolve_precision,
    shared_depth,
)
from .runtime import OrtModel, resolve_runtime
from .taxonomy import Taxonomy, malignancy_grade, malignancy_score
from .triage import TriageModel, unavailable


def flip_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """Stack 1, 2 (horizontal flip) or 4 (+ vertical flip, both) views of a batch along dim 0."""
    if views not in (1, 2, 4):
        raise ValueError(f"views must be 1, 2 or 4, not {views}")
    out = [x]
    if views >= 2:
        out.append(x.flip(3))
    if views == 4:
        out += [x.flip(2), x.flip(2, 3)]
    return torch.cat(out) if len(out) > 1 else x


@dataclass
class RankedItem:
    sub_class: str
    meta_class: str
    probability: float
    fine_probability: float
    uncalibrated_probability: float | None = None  # the fused probability before temperature scaling


@dataclass
class Differential:
    ranked: list[RankedItem]
    meta_probabilities: dict[str, float]
    fused_method: str
    malignancy_score: float | None
    malignancy_grade: int | None
    max_probability: float
    margin: float
    ood_score: float
    looks_unfamiliar: bool
    model_version: str = ""
    extra: dict = field(default_factory=dict)
    triage: dict = field(default_factory=dict)  # triage.py's block: tier, reason, abstain, thresholds, ...
    calibrated: bool = False  # ranked probabilities are temperature-scaled

    @property
    def top(self) -> RankedItem:
        return self.ranked[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        return d


class Predictor:
    device = torch.device("cpu")  # load(device=...) moves the models

    def __init__(
        self,
        model_dir,
        manifest,
        taxonomy,
        fines: list,
        coarse,
        binary,
        ood_means,
        precision: str | None = None,
        runtime: str | None = None,
        share_trunk: bool = True,
    ):
        fine = fines[0]
        self.model_dir = Path(model_dir)
        self.manifest = manifest
        self.taxonomy: Taxonomy = taxonomy
        self.fine_model: Classifier = fine
        self.fine_models: list[Classifier] = fines
        self.coarse_model: Classifier = coarse
        self.binary_model: Classifier | None = binary
        self.ood_means = ood_means
        pre = manifest["preprocessing"]
        self.size = int(pre["size"])
        self.mean, self.std = tuple(pre["mean"]), tuple(pre["std"])
        self.colour = pre.get("colour_constancy", "none")  # artefacts before it: "none"
        self.tta = bool(manifest.get("tta", True))
        self.tta_views = 2 if self.tta else 1  # 1, 2 (+ horizontal flip) or 4 (+ vertical, both)
        self.ood_threshold = float(manifest["ood"]["threshold"])
        self.gradcam_layer_name = GRADCAM_LAYER
        self.metadata_fine: MetadataModel | None = None  # metadata.json (age, sex, body site), if trained with it
        self.metadata_coarse: MetadataModel | None = None
        self.triage: TriageModel | None = None  # triage.json (calibration, tiers, detector), if fitted
        self.version = manifest.get("created", "") + " " + manifest.get("code_version", "")
        # BN-folded copies used for prediction (faster); the originals stay hookable for Grad-CAM
        rt = resolve_runtime(runtime)
        ort = rt == "onnxruntime" and importlib.util.find_spec("onnxruntime") is not None
        self.precision = resolve_precision(precision, onnxruntime=ort)
        self.runtime = "torch"  # float32 runs through ONNX Runtime (runtime.py) unless "torch"
        # with a shared trunk, _fast_pair gives fine model 1's logits and features and the coarse
        # logits in one pass, and _fast_fines holds the other fine models; else _fast_fines holds all
        # fine models and _fast_coarse the coarse model
        self.shared_depth = 0
        self._fast_pair = self._fast_coarse = None
        from . import quantize

        calibrated = (self.model_dir / quantize.FILE).is_file()
        if self.precision == "int8" and precision is None and not calibrated:
            # int8 asked for by the environment (a server-wide preference): artefacts without a
            # calibration are served as "auto" would; an explicit precision="int8" is an error
            logging.getLogger(__name__).warning("%s has no %s: serving it in float", self.model_dir, quantize.FILE)
            self.precision = resolve_precision("auto", onnxruntime=ort)
        if self.precision == "int8":
            if not calibrated:
                from .errors import ArtefactError

                raise ArtefactError(
                    f"{self.model_dir / quantize.FILE} is missing: this artefact has no int8 calibration; "
                    f"add one with `python -m inference.ml calibrate --int8 --model MODEL_DIR --data DIR`"
                )
            calib = quantize.unpack(art.load_state(self.model_dir / quantize.FILE))
            self._fast_fines = [quantize.quantized(m, calib[f"fine.{k}"], self.size) for k, m in enumerate(fines)]
            self._fast_coarse = quantize.quantized(coarse, calib["coarse"], self.size)
        elif self.precision == "bf16":
            self._fast_fines = [MixedBf16(m).to(memory_format=torch.channels_last) for m in fines]
            self._fast_coarse = MixedBf16(coarse).to(memory_format=torch.channels_last)
        else:
            from .quantize import WithFeatures

            # a coarse model trained with frozen transfer holds the fine model's stem and first blocks
            # unchanged: that part is computed once for both (networks.SharedTrunkPair)
            self.shared_depth = shared_depth(fines[0], coarse) if share_trunk else 0
            first, last = fuse_for_inference(fines[0]), fuse_for_inference(coarse)
            others = [WithFeatures(fuse_for_inference(m)) for m in fines[1:]]
            if self.shared_depth:
                folded = [SharedTrunkPair(first, last, self.shared_depth), *others]
            else:
                folded = [WithFeatures(first), *others, WithFeatures(last)]
            self.runtime = rt
            if self.runtime == "onnxruntime":
                try:
                    fast = [OrtModel(m, m.OUTPUTS) for m in folded]  # WithFeatures or SharedTrunkPair
                except Exception as e:  # onnxruntime missing or the export failed: PyTorch still serves
                    logging.getLogger(__name__).warning(
                        "%s: ONNX Runtime unavailable (%s: %s); serving with PyTorch",
                        self.model_dir,
                        type(e).__name__,
                        e,
                    )
                    self.runtime = "torch"
            if self.runtime == "torch":
                fast = [m.to(memory_format=torch.channels_last) for m in folded]
            if self.shared_depth:
                self._fast_pair, self._fast_fines = fast[0], fast[1:]
            else:
                self._fast_fines, self._fast_coarse = fast[:-1], fast[-1]
        self._fast_fine = None if self._fast_pair is not None else self._fast_fines[0]  # fine model 1 alone

    @classmethod
    def load(
        cls,
        model_dir,
        threads: int | None = None,
        precision: str | None = None,
        members: int | None = None,
        runtime: str | None = None,
        share_trunk: bool = True,
        device: str | None = None,
    ) -> Predictor:
        model_dir = Path(model_dir)
        dev = resolve_device(device)  # None: DERM_ML_DEVICE, else a GPU where there is one
        if dev.type == "cuda":  # float32 PyTorch on the GPU (int8, bf16 and ONNX Runtime serve CPUs)
            precision, runtime = "fp32", "torch"
        man = art.read_manifest(model_dir)
        if threads:
            torch.set_num_threads(threads)
        tax = Taxonomy.from_json(model_dir / "taxonomy.json")

        def mk(file, n):
            m = Classifier(man["backbone"], n)
            m.load_state_dict(art.load_state(model_dir / file))
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            return m.to(memory_format=torch.channels_last)

        n_members = int(man.get("fine_members", 1))
        if members is not None:
            if not 1 <= int(members) <= n_members:
                raise ValueError(f"{model_dir}: members must be between 1 and {n_members}, not {members}")
            n_members = int(members)
        fines = [mk(art.fine_file(k), len(tax.sub_classes)) for k in range(n_members)]
        coarse = mk("coarse.safetensors", len(tax.meta_classes))
        binary = mk("binary.safetensors", 2) if man.get("has_binary") else None
        ood = art.load_state(model_dir / "ood.safetensors")["class_means"].numpy()
        P = cls(model_dir, man, tax, fines, coarse, binary, ood, precision, runtime, share_trunk)
        P.device = dev
        for m in (*fines, coarse, binary, P._fast_pair, *P._fast_fines, P._fast_coarse):
            if m is not None and dev.type != "cpu":
                m.to(dev)
        P.triage = TriageModel.load(model_dir, tax)
        if (model_dir / METADATA_FILE).is_file():
            d = json.loads((model_dir / METADATA_FILE).read_text())
            P.metadata_fine, P.metadata_coarse = (
                MetadataModel.from_dict(d["fine"]),
                MetadataModel.from_dict(d["coarse"]),
            )
        return P

    # ------------------------------------------------------------------ preprocessing
    def to_uint8(self, img) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(load_image(img, self.size, self.colour).transpose(2, 0, 1)))

    def preprocess(self, img) -> torch.Tensor:
        """PIL image -> normalised float tensor (1, 3, S, S), exactly as at training time."""
        return normalise(self.to_uint8(img)[None], self.mean, self.std)

    # ------------------------------------------------------------------ inference
    @property
    def views(self) -> int:
        """Test-time views per photo as served: 1, or ``tta_views`` (2 or 4) when ``tta`` is on."""
        return self.tta_views if self.tta else 1

    @torch.inference_mode()
    def probabilities(self, images_u8: torch.Tensor):
        """uint8 (N, 3, S, S) -> (p_fine, p_coarse, features) numpy arrays."""
        x = normalise(images_u8.to(self.device), self.mean, self.std)
        if self.runtime == "torch":  # ONNX Runtime takes the photos as they are (N, C, H, W)
            x = x.contiguous(memory_format=torch.channels_last)
        n = len(x)
        views = self.views
        xx = flip_views(x, views)
        if self._fast_pair is not None:
            lf, feat, lc = self._fast_pair(xx)
            others = self._fast_fines
        else:
            lf, feat = self._fast_fines[0](xx)  # every fast model returns (logits, features)
            others = self._fast_fines[1:]
            lc = None
        pf = lf.float().softmax(1).view(views, n, -1).mean(0)
        for m in others:
            pf += m(xx)[0].float().softmax(1).view(views, n, -1).mean(0)
        pf /= 1 + len(others)
        if lc is None:
            lc = self._fast_coarse(xx)[0]
        pc = lc.float().softmax(1).view(views, n, -1).mean(0)
        # numpy copies, not views on torch's buffers: callers keep these for a whole data set, and each
        # kept view held on to about 6 MB of the batch's freed working memory (bench/archive_scale.py)
        return (pf.cpu().numpy().copy(), pc.cpu().numpy().copy(), feat[:n].float().cpu().numpy().copy())

    def fuse(self, p_fine, p_coarse, method: str = "product", metadata=None):
        """(fused sub-class probabilities, coarse probabilities) of a batch; ``metadata`` (one dict per
        photo: age, sex, site/localization) enters where the artefact has a metadata model
        (``metadata.fuse_with_metadata``)."""
        return fuse_with_metadata(
            p_coarse, p_fine, self.taxonomy, method, self.metadata_fine, self.metadata_coarse, metadata
        )

    def metadata_used(self, meta: dict | None) -> dict:
        """The fields of one photo's metadata the artefact's metadata model takes (value as read)."""
        if self.metadata_fine is None or not meta:
            return {}
        r = read_fields(meta)
        return {k: v for k, v in r.items() if v is not None and v in self.metadata_fine.tables.get(k, {})}

    def predict(
        self, images, method: str = "product", batch_size: int = 8, metadata=None, modality=None, thresholds=None
    ) -> list[Differential]:
        """Ranked differentials of PIL images (or paths). ``metadata`` (optional): one dict per image
        with any of age, sex, site (or localization); see ``Predictor.fuse``. ``modality`` (optional):
        "dermoscopic" / "clinical" for every image, or one per image (None: not known); a photo of
        another modality than the model's gets no tier. ``thresholds`` (optional): per-site tier
        thresholds, {"urgent": t, "malignant": t} or ``triage.thresholds_for_targets``' result."""
        from .infer import ood_scores

        out: list[Differential] = []
        tax = self.taxonomy
        subs = tax.sub_classes
        if metadata is not None and len(metadata) != len(images):
            raise ValueError(f"{len(metadata)} metadata rows for {len(images)} images")
        mods = [modality] * len(images) if modality is None or isinstance(modality, str) else list(modality)
        if len(mods) != len(images):
            raise ValueError(f"{len(mods)} modalities for {len(images)} images")
        for s in range(0, len(images), batch_size):
            u8 = torch.stack([self.to_uint8(im) for im in images[s : s + batch_size]])
            pf, pc_raw, feat = self.probabilities(u8)
            metas = None if metadata is None else list(metadata[s : s + batch_size])
            fused, pc = self.fuse(pf, pc_raw, method, metas)
            prod = fused if method == "product" else self.fuse(pf, pc_raw, "product", metas)[0]
            S = malignancy_score(prod, tax)
            ood = ood_scores(feat, self.ood_means)
            calibrated = self.triage is not None and method == "product"
            if self.triage is not None:  # tiers always from the calibrated product differential
                q = self.triage.calibrate(prod)
                blocks = self.triage.assess(
                    q, feat, mods[s : s + batch_size], thresholds, shown=None if method == "product" else fused
                )
            else:
                blocks = [unavailable(tax) for _ in range(len(u8))]
            shown = q if calibrated else fused
            for i in range(len(u8)):
                order = np.argsort(-shown[i], kind="stable")
                ranked = [
                    RankedItem(
                        subs[j],
                        tax.parent(subs[j]),
                        float(shown[i, j]),
                        float(pf[i, j]),
                        float(fused[i, j]) if calibrated else None,
                    )
                    for j in order
                ]
                top2 = shown[i, order[:2]]
                sc = None if S is None else float(S[i])
                unfamiliar = blocks[i]["unfamiliar"]
                out.append(
                    Differential(
                        ranked=ranked,
                        meta_probabilities={m: float(pc[i, k]) for k, m in enumerate(tax.meta_classes)},
                        fused_method=method,
                        malignancy_score=sc,
                        malignancy_grade=None if sc is None else int(malignancy_grade(sc)),
                        max_probability=float(top2[0]),
                        margin=float(top2[0] - (top2[1] if len(top2) > 1 else 0.0)),
                        ood_score=float(ood[i]),
                        looks_unfamiliar=bool(ood[i] > self.ood_threshold) if unfamiliar is None else bool(unfamiliar),
                        model_version=self.version.strip(),
                        extra={"metadata_used": self.metadata_used(metas[i])} if metas is not None else {},
                        triage=blocks[i],
                        calibrated=calibrated,
                    )
                )
        return out

    def predict_one(
        self, img, method: str = "product", metadata: dict | None = None, modality: str | None = None, thresholds=None
    ) -> Differential:
        return self.predict(
            [img], method, metadata=None if metadata is None else [metadata], modality=modality, thresholds=thresholds
        )[0]
