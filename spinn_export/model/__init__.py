"""The model: a network as a graph of ATen ops with its width groups and costs (`graph`, `rules`, `groups`,
`architecture`), one `Network` value (`network`), read exactly from the user's file or refused (`importer`), and saved
as safetensors checkpoints (`checkpoint`)."""
