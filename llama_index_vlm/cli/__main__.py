"""``python -m llama_index_vlm.cli``: the same as the ``llama-index-vlm`` command."""

import sys

from llama_index_vlm.cli import main

sys.exit(main())
