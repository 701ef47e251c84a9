"""`pytest bench` from the checkout: the suite builds no models itself; without --spinn-artifacts it benchmarks the
pipeline's reference models."""
from spinn_export.pipeline.reference import ReferenceModels

pytest_spinn_models = ReferenceModels().pytest_spinn_models
