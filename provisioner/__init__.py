"""The core library shared by the worker, the web app and the CLI."""

import warnings

# asyncssh (the SSH layer) imports cryptography's DSA support, which newer
# cryptography releases deprecate with a warning on every import: noise on
# every worker's stderr, not something an operator can act on.
warnings.filterwarnings("ignore", message="DSA is deprecated", module="asyncssh")
