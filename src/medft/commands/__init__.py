"""One module per `medft` command that is not a library core: `cv`, `search`, `demo`,
`calibrate`, `serve` (and the Hugging Face `space` it writes), `export`, `predict`, `explain`,
`preview` (show-augmentations) and `audit`. Each is called by `medft.cli` and calls into the
library below it."""
