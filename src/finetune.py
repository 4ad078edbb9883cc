"""Fine-tune an image classifier from a recipe.

    accelerate launch src/finetune.py recipes/vit_multiclass.yaml [--key value ...]

Keys after the recipe override it. See `medft.config` for every key.
"""

import sys

from medft.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
