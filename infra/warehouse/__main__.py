"""`python -m safeloop.infra.warehouse`: the endpoint daemon."""

import sys

from safeloop.infra.warehouse.daemon import main

sys.exit(main())
