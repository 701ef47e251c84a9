"""The task a model is trained and pruned on: the built-in Stokes problem (`stokes`), the physics interface that
holds a model to a PDE residual, built in or the user's (`physics`), datasets (`data`), metrics and training."""
