"""Audio encoders of transformers, loaded from a local folder (``weights``, as written by ``save_pretrained``):
AST (``ASTModel``, the pooled output) and CLAP's audio tower (``ClapModel.get_audio_features``).

``kind`` is ``ast``, ``clap`` or ``auto`` (from the folder's ``config.json``). The folder's feature extractor
(``preprocessor_config.json``; the model type's default if absent) turns each window into model input on the CPU,
in the decode workers. Window: the extractor's input length (AST: ``max_length`` 10-ms frames, CLAP:
``nb_max_samples``) unless ``window_seconds`` says otherwise; audio at the extractor's sampling rate, FFmpeg's
mono down-mix.
"""

from __future__ import annotations

import json

import torch

from extractors.backbones.base import (
    Backbone,
    BackboneError,
    InputFormat,
    ModalitySpec,
    audio_windows,
    register,
    require_weights,
)
from extractors.params import choice, local_file, number

KINDS = ("auto", "ast", "clap")


@register
class HFAudio(Backbone):
    name = "hf_audio"
    weights_param = "weights"
    declared_params = {"weights": local_file(), "kind": choice("auto", KINDS), "window_seconds": number(None, above=0),
                       "hop_seconds": number(None, above=0)}

    def __init__(self, weights, kind, window_seconds, hop_seconds):
        super().__init__(weights=weights, kind=kind, window_seconds=window_seconds, hop_seconds=hop_seconds)
        folder = require_weights("hf_audio", weights, "save an AST or CLAP model with save_pretrained (e.g. "
                                 "MIT/ast-finetuned-audioset-10-10-0.4593 or laion/clap-htsat-unfused from the "
                                 "Hugging Face hub) into a local folder", folder=True)
        if kind not in KINDS:
            raise BackboneError(f"backbone 'hf_audio': kind must be one of {KINDS}, got {kind!r}")
        if kind == "auto":
            model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
            kind = {"audio-spectrogram-transformer": "ast", "clap": "clap"}.get(model_type)
            if kind is None:
                raise BackboneError(f"backbone 'hf_audio': {folder} holds a {model_type!r} model; supported: AST "
                                    "(audio-spectrogram-transformer) and CLAP; set kind if the config says otherwise")
        import transformers as tf

        self.kind = kind
        if kind == "ast":
            self.net = tf.ASTModel.from_pretrained(str(folder), local_files_only=True)
            fx_cls = tf.ASTFeatureExtractor
            dim = self.net.config.hidden_size
        else:
            self.net = tf.ClapModel.from_pretrained(str(folder), local_files_only=True)
            fx_cls = tf.ClapFeatureExtractor
            dim = self.net.config.projection_dim
        self.extractor = (fx_cls.from_pretrained(str(folder), local_files_only=True)
                          if (folder / "preprocessor_config.json").exists() else fx_cls())
        rate = int(self.extractor.sampling_rate)
        natural = (self.extractor.max_length / 100.0 if kind == "ast"
                   else self.extractor.nb_max_samples / rate)
        window = float(window_seconds or natural)
        self.window = window
        self.modalities = ("audio",)
        self.specs = {"audio": ModalitySpec(window, float(hop_seconds or window), int(dim))}
        self.input_format = InputFormat(sample_rate=rate, channels="downmix")

    def window_data(self, clip, modality, starts):
        wav = audio_windows(clip.audio, clip.sample_rate, starts, self.window, clip.sample_start)
        if self.kind == "ast":
            out = self.extractor(list(wav), sampling_rate=clip.sample_rate, return_tensors="pt")
            return out["input_values"].float()
        out = self.extractor(list(wav), sampling_rate=clip.sample_rate, return_tensors="pt", padding="repeatpad",
                             truncation="fusion" if self.net.config.audio_config.enable_fusion else "rand_trunc")
        return out["input_features"].float()

    def embed(self, modality, x):
        if self.kind == "ast":
            return self.net(input_values=x).pooler_output
        is_longer = torch.zeros(len(x), 1, dtype=torch.bool, device=x.device)
        out = self.net.get_audio_features(input_features=x, is_longer=is_longer)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

