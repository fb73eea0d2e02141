"""The workflow spec: frozen, validated, the one place that parses YAML."""

from .inference import EvaluationSpec, InferenceSpec
from .load import load_workflow, parse_workflow
from .model import (
    ClassSpec,
    InputSpec,
    IntensitySpec,
    ModelSpec,
    NormalizeSpec,
    OutputSpec,
    PreprocessingSpec,
    ResourceSpec,
    StatisticsSpec,
    TilingSpec,
    WorkflowSpec,
)

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
    "load_workflow",
    "parse_workflow",
]
