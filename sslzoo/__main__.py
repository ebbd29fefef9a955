import sys

from sslzoo.cli import main

sys.exit(main())
