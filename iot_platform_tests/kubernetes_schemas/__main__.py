"""`python -m iot_platform_tests.kubernetes_schemas`: fetch and cache the CRD schemas (run by `make deps`)."""

import sys

from iot_platform_tests.kubernetes_schemas import SchemaUnavailable, main

try:
    sys.exit(main())
except SchemaUnavailable as exc:
    print(f"kubernetes schemas: {exc}", file=sys.stderr)
    sys.exit(1)
