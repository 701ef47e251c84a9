"""Pruning: neuron importance (`importance`), the width budget (`budget`), structured removal with fine-tuning
(`structured`) and the unstructured magnitude baseline (`magnitude`)."""
