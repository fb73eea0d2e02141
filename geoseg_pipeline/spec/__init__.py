"""The workflow spec: frozen, validated, the one place that parses YAML."""

from .classes import ClassSpec
from .inference import EvaluationSpec, InferenceSpec
from .load import load_workflow, parse_workflow
from .model import (
    InputSpec,
    IntensitySpec,
    ModelSpec,
    NormalizeSpec,
    PreprocessingSpec,
    ResourceSpec,
    TilingSpec,
    WorkflowSpec,
)
from .output import OutputSpec, StatisticsSpec, ZonesSpec

__all__ = [
    "ClassSpec",
    "EvaluationSpec",
    "InferenceSpec",
    "InputSpec",
    "IntensitySpec",
    "ModelSpec",
    "NormalizeSpec",
    "OutputSpec",
    "PreprocessingSpec",
    "ResourceSpec",
    "StatisticsSpec",
    "TilingSpec",
    "WorkflowSpec",
    "ZonesSpec",
    "load_workflow",
    "parse_workflow",
]
