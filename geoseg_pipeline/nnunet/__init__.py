"""nnU-Net v2 trained model folders: read the folder (:mod:`.folder`), preprocess a case
(:mod:`.preprocess`), build the fold ensemble (:mod:`.network`, torch) and export the labels
streamed (:mod:`.export`), each as nnU-Net's own predictor does, without nnU-Net at run time."""

from .case import CaseGeometry
from .folder import NnunetModel, is_nnunet_folder, read_model_folder

__all__ = ["CaseGeometry", "NnunetModel", "is_nnunet_folder", "read_model_folder"]
