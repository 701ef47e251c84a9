"""The model: a network as a graph of ATen ops with its width groups and costs (`graph` ... `architecture`), one
`Network` value, the user's file read exactly or refused (`importer`), the built-in SPINN (`mlp`), checkpoints."""
