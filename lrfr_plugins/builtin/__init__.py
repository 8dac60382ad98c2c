"""The built-in plugins, registered through the same hooks and entry point as any third-party package."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def lrfr_register_backbones(register):
    from .backbones.facex_ir import FaceXIR
    from .backbones.iresnet import IResNet18, IResNet34, IResNet50, IResNet100, IResNet200
    from .backbones.mobilefacenet import MobileFaceNet, MobileFaceNetLarge
    from .backbones.onnx import OnnxBackbone
    from .backbones.tiny import TinyNet

    register("tiny", TinyNet)
    register("iresnet18", IResNet18)
    register("iresnet34", IResNet34)
    register("iresnet50", IResNet50)
    register("iresnet100", IResNet100)
    register("iresnet200", IResNet200)
    register("mobilefacenet", MobileFaceNet)  # arcface_torch's mbf
    register("mobilefacenet-large", MobileFaceNetLarge)  # arcface_torch's mbf_large
    register("facex-ir", FaceXIR)  # FaceX-Zoo's IR-50/100/152, the founding study's backbone
    register("onnx", OnnxBackbone)  # any ONNX recognizer (InsightFace's packs) as a trainable backbone


@hookimpl
def lrfr_register_heads(register):
    from .heads.adaface import AdaFace
    from .heads.approach1 import Approach1
    from .heads.approach2 import Approach2
    from .heads.arcface import ArcFace
    from .heads.combined import Combined
    from .heads.cosface import CosFace
    from .heads.magface import MagFace
    from .heads.sphereface import SphereFace

    register("arcface", ArcFace)
    register("cosface", CosFace)
    register("combined", Combined)
    register("sphereface", SphereFace)
    register("adaface", AdaFace)
    register("magface", MagFace)
    register("approach1", Approach1)
    register("approach2", Approach2)


@hookimpl
def lrfr_register_quality(register):
    from .quality.feature_norm import FeatureNorm
    from .quality.laplacian import Laplacian
    from .quality.resolution_flag import ResolutionFlag

    register("laplacian", Laplacian)
    register("resolution-flag", ResolutionFlag)
    register("feature-norm", FeatureNorm)


@hookimpl
def lrfr_register_degradations(register):
    from .degradations.cross_resolution import CrossResolution

    register("cross-resolution", CrossResolution)


@hookimpl
def lrfr_register_datasets(register):
    from .datasets.image_folder import ImageFolder
    from .datasets.insightface_rec import InsightFaceRec
    from .datasets.synthetic import SyntheticDataset

    register("synthetic", SyntheticDataset)
    register("image-folder", ImageFolder)
    register("insightface-rec", InsightFaceRec)


@hookimpl
def lrfr_register_protocols(register):
    from .protocols.lfw import LFW
    from .protocols.qmul_survface import QMULSurvFace
    from .protocols.scface import SCface
    from .protocols.synthetic import SyntheticVerification
    from .protocols.synthetic_scface import SyntheticSCface
    from .protocols.synthetic_survface import SyntheticSurvFace
    from .protocols.tinyface import TinyFace
    from .protocols.verification_bin import VerificationBin

    register("synthetic", SyntheticVerification)
    register("qmul-survface", QMULSurvFace)
    register("scface", SCface)
    register("lfw", LFW)
    register("bin", VerificationBin)
    register("synthetic-survface", SyntheticSurvFace)
    register("synthetic-scface", SyntheticSCface)
    register("tinyface", TinyFace)  # TinyFace closed-set identification: rank-1/5/10/20 and mAP, 153,428 distractors


@hookimpl
def lrfr_register_finetuners(register):
    from .finetuners.derivenet import DeriveNet
    from .finetuners.distill import Distill
    from .finetuners.octuplet import Octuplet

    register("octuplet", Octuplet)
    register("derivenet", DeriveNet)
    register("distill", Distill)  # label-free cross-resolution teacher-student fine-tuning
