"""The model: its spec and cost figures (`spec`), plain MLPs built from it (`mlp`), safe safetensors checkpoints
(`checkpoint`) and the import of users' state_dicts and modules (`importer`)."""
