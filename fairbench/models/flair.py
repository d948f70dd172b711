"""FLAIR (Silva-Rodriguez et al., Medical Image Analysis 2025), re-implemented from jusiro/FLAIR
``flair/modeling/model.py`` (commit d6652d5, 2025-11-27; Apache-2.0).

Upstream builds its towers with ``torchvision.models.resnet50(weights=...)`` and ``AutoModel.from_pretrained``
(downloads) and loads its checkpoint with ``strict=False``; this module builds the same module tree from the
card's configuration, so the released ``flair_resnet.pth`` (``torch.save(model.state_dict())``) or the hub's
``model.safetensors`` (``PyTorchModelHubMixin``) loads strictly with its own key names:

- ``vision_model.model.*``: torchvision's ResNet-50 with ``fc = Identity`` (2048-d);
  ``vision_model.projection_head_vision.projection.weight``: ``Linear(2048, 512, bias=False)``;
- ``text_model.model.*``: Bio_ClinicalBERT (``BertModel`` with pooler); ``text_model.projection_head_text.
  projection.weight``: ``Linear(768, 512, bias=False)``;
- ``logit_scale``: ``log(1/0.07)`` at init; ``compute_logits`` clamps it to [0, 4.6052] before ``exp``.

Both projection heads L2-normalise the raw feature, project, and L2-normalise again (``ProjectionLayer`` with
``projection=True, norm=True``). The text feature is the mean over ALL token positions (padding included: no
mask) of hidden_states[1], [2] and [-1], averaged over the three layers. Tokenizer: Bio_ClinicalBERT,
``model_max_length = 77``, ``truncation=True, padding=True``.

Renames: ``text_model.model.embeddings.position_ids`` (saved by transformers < 4.31) is dropped.

Preprocessing (``resize: canvas``, :func:`fairbench.models.preprocess.canvas_resize`): RGB / 255, longest side
to 512 keeping the aspect ratio and zero padding at the right and bottom (a square image straight to 512x512),
torchvision bilinear antialiased resize, no mean/std. Deviation: upstream's zero-shot runs first crop the fundus
field of view (``crop_foreground=True``: Li threshold on the red channel, bounding box of the largest connected
component); fairbench does not (it needs scikit-image, and the task's images decide what is in the frame).

Zero-shot (``FLAIRModel.compute_text_embeddings`` with ``domain_knowledge=True``, main_transferability.py's
default): each class is replaced by its expert descriptions (:data:`DEFINITIONS`, upstream's
``flair/modeling/dictionary.py`` verbatim), plus the class name itself unless already listed or the class is a
"myopic maculopathy" grade; a class with no entry is its own name. Each becomes ``"A fundus photograph of
<description>"``; all descriptions of a class are tokenised as one batch; the class prototype is the MEAN of
their normalised projected embeddings, not re-normalised; logits = ``exp(clamp(logit_scale)) x image @
prototype``; softmax over classes. Probe feature (``project_features=True, norm_features=True``, upstream's
transferability default): the normalised 512-d projection (the embedding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fairbench.errors import CardError, WeightsError
from fairbench.models.base import ModelCard, VLModel
from fairbench.models.family import Family
from fairbench.models.inputs import resolve_inputs, vocab_tokenizer_inputs
from fairbench.models.towers import bert_model, bert_tokenizer, first_second_last_mean, resnet, resnet_channels
from fairbench.models.weights import WeightsSource, files_info

__all__ = ["DEFINITIONS", "FAMILY", "FLAIRModel", "FLAIRModule", "build_flair", "flair_prompts"]

LOGIT_SCALE_MAX = 4.6052
CAPTION = "A fundus photograph of [CLS]"

#: upstream's expert-knowledge descriptions (jusiro/FLAIR ``flair/modeling/dictionary.py`` ``definitions``)
DEFINITIONS: dict[str, tuple[str, ...]] = {
    'no diabetic retinopathy': ('no diabetic retinopathy', 'no microaneurysms'),
    'mild diabetic retinopathy': ('only few microaneurysms',),
    'moderate diabetic retinopathy': (
        'many exudates near the macula',
        'many haemorrhages near the macula',
        'retinal thickening near the macula',
        'hard exudates',
        'cotton wool spots',
        'few severe haemorrhages',
    ),
    'severe diabetic retinopathy': (
        'venous beading',
        'many severe haemorrhages',
        'intraretinal microvascular abnormality',
    ),
    'proliferative diabetic retinopathy': ('preretinal or vitreous haemorrhage', 'neovascularization'),
    'no referable diabetic macular edema': ('no apparent exudates',),
    'hard exudates': ('small white or yellowish deposits with sharp margins', 'bright lesion'),
    'soft exudates': (
        'pale yellow or white areas with ill-defined edges',
        'cotton-wool spot',
        'small, whitish or grey, cloud-like, linear or serpentine, slightly elevated lesions with fimbriated edges',
    ),
    'microaneurysms': ('small red dots',),
    'haemorrhages': ('dense, dark red, sharply outlined lesion',),
    'non clinically significant diabetic macular edema': (
        'presence of exudates outside the radius of one disc diameter from the macula center',
        'presence of exudates',
    ),
    'age related macular degeneration': (
        'many small drusen',
        'few medium-sized drusen',
        'large drusen',
        'macular degeneration',
    ),
    'media haze': (
        'vitreous haze',
        'pathological opacity',
        'the obscuration of fundus details by vitreous cells and protein exudation',
    ),
    'drusens': ('yellow deposits under the retina', 'numerous uniform round yellow-white lesions'),
    'pathologic myopia': ('anomalous disc, macular atrophy and possible tessellation',),
    'branch retinal vein occlusion': ('occlusion of one of the four major branch retinal veins',),
    'tessellation': ('large choroidal vessels at the posterior fundus',),
    'epiretinal membrane': ('greyish semi-translucent avascular membrane',),
    'laser scar': (
        'round or oval, yellowish-white with variable black pigment centrally',
        '50 to 200 micron diameter lesions',
    ),
    'no laser scar': ('no laser scar',),
    'macular scar': ('macular scar',),
    'central serous retinopathy': ('subretinal fluid involving the fovea', 'leakage'),
    'optic disc cupping': ('optic disc cupping',),
    'central retinal vein occlusion': ('central retinal vein occlusion',),
    'tortuous vessels': ('tortuous vessels',),
    'asteroid hyalosis': (
        'multiple sparking, yellow-white, and refractile opacities in the vitreous cavity',
        'vitreous opacities',
    ),
    'optic disc pallor': ('pale yellow discoloration that can be segmental or generalized on optic disc',),
    'optic disc edema': ('optic disc edema',),
    'shunt': (
        'collateral vessels connecting the choroidal and the retinal vasculature',
        'collateral vessels of large caliber and lack of leakage',
    ),
    'anterior ischemic optic neuropathy': ('anterior ischemic optic neuropathy',),
    'parafoveal telangiectasia': ('parafoveal telangiectasia',),
    'retinal traction': ('retinal traction',),
    'retinitis': ('retinitis',),
    'chorioretinitis': ('chorioretinitis',),
    'exudates': ('small white or yellowish white deposits with sharp margins', 'bright lesion'),
    'retinal pigment epithelium changes': ('retinal pigment epithelium changes',),
    'macular hole': ('lesion in the macula', 'grayish fovea'),
    'retinitis pigmentosa': ('pigment deposits are present in the periphery',),
    'cotton wool spots': ('cotton wool spots', 'soft exudates'),
    'colobomas': ('colobomas',),
    'optic disc pit maculopathy': ('optic disc pit maculopathy',),
    'preretinal haemorrhage': ('preretinal haemorrhage',),
    'myelinated nerve fibers': ('myelinated nerve fibers',),
    'haemorrhagic retinopathy': ('haemorrhagic retinopathy',),
    'central retinal artery occlusion': ('central retinal artery occlusion',),
    'tilted disc': ('tilted disc',),
    'cystoid macular edema': ('cysts in the macula region',),
    'post traumatic choroidal rupture': ('post traumatic choroidal rupture',),
    'choroidal folds': ('choroidal folds',),
    'vitreous haemorrhage': ('vitreous haemorrhage',),
    'macroaneurysm': ('macroaneurysm',),
    'vasculitis': ('vasculitis',),
    'branch retinal artery occlusion': ('branch retinal artery occlusion',),
    'plaque': ('plaque',),
    'haemorrhagic pigment epithelial detachment': ('haemorrhagic pigment epithelial detachment',),
    'collaterals': ('collaterals',),
    'normal': ('healthy', 'no findings', 'no lesion signs', 'no glaucoma', 'no retinopathy'),
    'large optic cup': ('abnormality in optic cup',),
    'retina detachment': ('retina detachment',),
    'Vogt-Koyanagi syndrome': ('Vogt-Koyanagi syndrome',),
    'maculopathy': ('maculopathy',),
    'glaucoma': ('optic nerve abnormalities', 'abnormal size of the optic cup', 'anomalous size in the optic disc'),
    'optic atrophy': ('optic atrophy',),
    'severe hypertensive retinopathy': (
        ('flame shaped hemorrhages at the disc margin, blurred disc margins, congested retinal veins, '
         'papilledema, and secondary macular exudates'),
        'arterio-venous crossing changes, macular star and cotton wool spots',
    ),
    'disc swelling and elevation': ('disc swelling and elevation',),
    'dragged disk': ('dragged disk',),
    'congenital disk abnormality': ('disk abnormality', 'optic disk lesion'),
    'Bietti crystalline dystrophy': ('Bietti crystalline dystrophy',),
    'peripheral retinal degeneration and break': ('peripheral retinal degeneration and break',),
    'neoplasm': ('neoplasm',),
    'yellow-white spots flecks': ('yellow-white spots flecks',),
    'fibrosis': ('fibrosis',),
    'silicon oil': ('silicon oil',),
    'no proliferative diabetic retinopathy': (
        'diabetic retinopathy with no neovascularization',
        'no neovascularization',
    ),
    'no glaucoma': ('no glaucoma',),
    'cataract': ('opacity in the macular area',),
    'hypertensive retinopathy': (
        'possible signs of haemorraghe with blot, dot, or flame-shaped',
        'possible presence of microaneurysm, cotton-wool spot, or hard exudate',
        'arteriolar narrowing',
        'vascular wall changes',
        'optic disk edema',
    ),
    'neovascular age related macular degeneration': ('neovascular age-related macular degeneration',),
    'geographical age related macular degeneration': ('geographical age-related macular degeneration',),
    'acute central serous retinopathy': ('acute central serous retinopathy',),
    'chronic central serous retinopathy': ('chronic central serous retinopathy',),
    'no cataract': ('no cataract signs', 'no obscure opacities'),
    'abnormal optic disc': ('abnormal optic disc',),
    'abnormal vessels': ('abnormal vessels',),
    'abnormal macula': ('abnormal macula',),
    'macular edema': ('macular edema',),
    'scar': ('scar',),
    'nevus': ('darkly pigmented lesion found in the back of the eye',),
    'increased cup disc': ('increased cup disc',),
    'intraretinal microvascular abnormalities': (
        ('shunt vessels and appear as abnormal branching or dilation of existing blood vessels '
         '(capillaries) within the retina'),
        ('deeper in the retina than neovascularization, has blurrier edges, is more of a burgundy than a '
         'red, does not appear on the optic disc'),
        'vascular loops confined within the retina',
    ),
    'red small dots': ('microaneurysms',),
    'neovascularisation': ('neovascularisation',),
    'a disease': ('no healthy', 'lesions'),
    'superficial haemorrhages': ('superficial haemorrhages',),
    'deep haemorrhages': ('deep haemorrhages',),
    'ungradable': ('no fundus', 'very noisy', 'noisy'),
    'noisy': ('noisy',),
    'normal macula': ('normal macula',),
    'macular degeneration': ('macular degeneration',),
    'diabetic retinopathy': ('diabetic retinopathy',),
    'no hypertensive retinopathy': ('no presence of hypertensive retinopathy',),
    'mild hypertensive retinopathy': (
        'mild arteriovenous ratio',
        'mild tortuosity',
        'focal arteriolar narrowing',
        'arteriovenous nicking',
    ),
    'moderate hypertensive retinopathy': (
        'moderate arteriovenous ratio',
        'moderate tortuosity',
        'cotton wool spots',
        'flame-shaped haemorrhages',
    ),
    'malignant hypertensive retinopathy': (
        'severe arteriovenous ratio',
        'severe tortuosity',
        'swelling optical disk',
        'flame-shaped haemorrhages',
    ),
    'myopic maculopathy grade cero': ('healthy macula',),
    'myopic maculopathy grade one': ('tessellated fundus',),
    'myopic maculopathy grade two': ('diffuse chorioretinal atrophy',),
    'myopic maculopathy grade three': ('patchy chorioretinal atrophy',),
    'myopic maculopathy grade four': ('macular atrophy',),
}


def flair_prompts(classes: list[str], caption: str = CAPTION) -> list[list[str]]:
    """Per class: upstream's ``compute_text_embeddings(domain_knowledge=True)`` descriptions in the caption."""
    out = []
    for name in classes:
        if name in DEFINITIONS:
            descriptions = list(DEFINITIONS[name])
            if name not in descriptions and "myopic maculopathy" not in name:
                descriptions.append(name)
        else:
            descriptions = [name]
        out.append([caption.replace("[CLS]", d) for d in descriptions])
    return out


class ProjectionLayer(nn.Module):
    """Normalise, project (no bias), normalise (upstream ``ProjectionLayer``, projection and norm on)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / x.norm(dim=-1, keepdim=True)
        x = self.projection(x)
        return x / x.norm(dim=-1, keepdim=True)


class FLAIRVision(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.model = resnet(arch.get("resnet"))
        self.model.fc = nn.Identity()
        self.projection_head_vision = ProjectionLayer(resnet_channels(arch.get("resnet"))[1],
                                                      int(arch.get("proj_dim", 512)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection_head_vision(self.model(pixel_values))


class FLAIRText(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.model = bert_model(arch.get("text", {}), pooler=True)
        self.projection_head_text = ProjectionLayer(self.model.config.hidden_size, int(arch.get("proj_dim", 512)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hs = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        return self.projection_head_text(first_second_last_mean(hs))


class FLAIRModule(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.vision_model = FLAIRVision(arch)
        self.text_model = FLAIRText(arch)
        self.logit_scale = nn.Parameter(torch.log(torch.tensor(1 / 0.07)))


class FLAIRModel(VLModel):
    def __init__(self, card: ModelCard, module: FLAIRModule, tokenizer: Any, device: torch.device,
                 weights_info: dict[str, Any]) -> None:
        self.card = card
        self.net = module.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.weights_info = weights_info
        self.context_length = int(card.architecture.get("context_length", 77))
        self.caption = str(card.options.get("caption", CAPTION))
        if card.probe_feature != "embedding":
            raise CardError(f"{card.path}: field 'probe_feature' must be embedding for FLAIR (the normalised "
                            f"projection, upstream's project_features=True)")

    @property
    def module(self) -> nn.Module:
        return self.net

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), truncation=True, padding=True, max_length=self.context_length,
                             return_tensors="pt")
        return {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.net.vision_model(pixels.to(self.device))
        return {"embedding": emb, "feature": emb}

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.text_model(tokens["input_ids"], tokens["attention_mask"])

    def logit_scale(self) -> torch.Tensor:
        return self.net.logit_scale.detach().clamp(0, LOGIT_SCALE_MAX).exp()

    def class_embeddings(self, prompts: list[list[str]]) -> torch.Tensor:
        """Upstream: the mean of the (normalised) projected embeddings of a class's descriptions, tokenised as
        one batch, NOT re-normalised."""
        return torch.stack([self.encode_text(self.tokenize(p)).mean(dim=0) for p in prompts])

    def zeroshot_logits(self, image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
        """``compute_logits``: ``exp(clamp(logit_scale)) x image @ prototype`` (both as upstream leaves them)."""
        return self.logit_scale() * image_emb @ class_emb.T

    def zeroshot_head(self, task: Any, ensemble: str = "family") -> Any:
        from fairbench.models.zeroshot import ZeroShotHead, build_head

        if ensemble != "family":
            return build_head(self, task, ensemble)
        names = [task.prompts.classnames[c][0] if task.prompts is not None else c for c in task.classes]
        names = [c if c in DEFINITIONS else n for c, n in zip(task.classes, names)]
        prompts = flair_prompts(names, self.caption)
        class_emb = self.class_embeddings(prompts)
        device = self.device

        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.zeroshot_logits(out["embedding"].to(device), class_emb)

        record = {"style": "flair domain knowledge (flair/modeling/dictionary.py)", "rule": "flair_mean",
                  "sources": {c: "definitions" if n in DEFINITIONS else "class name"
                              for c, n in zip(task.classes, names)},
                  "n_prompts": {c: len(p) for c, p in zip(task.classes, prompts)}}
        return ZeroShotHead(classes=tuple(task.classes), prompts=prompts, rule="flair_mean", score=score,
                            record=record)


def build_flair(card: ModelCard, source: WeightsSource, device: torch.device) -> FLAIRModel:
    if source.scheme not in ("random", "file", "local-dir", "hf-hub"):
        raise WeightsError(f"model '{card.name}': weights source '{source.describe()}' is not supported by FLAIR "
                           f"(use flair_resnet.pth, model.safetensors, local-dir:, hf-hub: or random)")
    inputs = resolve_inputs(card, source)
    inputs.raise_if_missing()
    tokenizer = bert_tokenizer(inputs.tokenizer)
    module = FLAIRModule(card.architecture)
    if source.scheme == "random":
        return FLAIRModel(card, module, tokenizer, device, {"source": "random", "sha256": "random",
                                                            **inputs.info()})
    from fairbench.models.openclip import load_state_file, load_strict

    path = inputs.weights
    if path.is_dir():
        path = next(path / f for f in ("flair_resnet.pth", "model.safetensors") if (path / f).is_file())
    state = load_state_file(path)
    target = set(module.state_dict())
    state = {k: v for k, v in state.items() if not (k == "text_model.model.embeddings.position_ids"
                                                   and k not in target)}
    load_strict(module, state, where=str(path), card=card)
    info = files_info(source.describe() if source.scheme != "file" else str(path), [path], module)
    return FLAIRModel(card, module, tokenizer, device, {**info, **inputs.info()})


#: the released checkpoint (Google Drive zip) or the hub's HubMixin file; tokenizer: a BERT vocab.txt
FAMILY = Family(build=build_flair, default_files=("flair_resnet.pth|model.safetensors",),
                inputs=vocab_tokenizer_inputs)
