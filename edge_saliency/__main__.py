import sys

from edge_saliency.cli import main

sys.exit(main())
