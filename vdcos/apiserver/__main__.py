import sys

from vdcos.apiserver.server import main

sys.exit(main())
