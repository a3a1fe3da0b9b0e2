"""`python -m infra.warehouse`: the endpoint daemon."""

import sys

from infra.warehouse.daemon import main

sys.exit(main())
